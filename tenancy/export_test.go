package tenancy

// SQLOf renders a builder's statement without running it.
func SQLOf(s interface{ toSQL() (string, []any, error) }) (string, []any, error) { return s.toSQL() }

// OmitTenantPredicate makes t drop its own tenant predicate, so that a test
// can prove that row-level security alone keeps tenants apart.
func OmitTenantPredicate(t *Tenant) *Tenant {
	c := *t
	c.omitPredicate = true
	return &c
}

// Test tables of each scope, for the builder tests.
var (
	WorkspacesTable  = workspacesTable
	MembershipsTable = membershipsTable
	UsersTable       = usersTable
)
