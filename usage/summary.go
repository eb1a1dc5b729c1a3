package usage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/meterbase/meterbase/tenancy"
)

// SummaryParams ask for a summary of a workspace's usage.
type SummaryParams struct {
	// From and To bound the events summed by when they happened: [From,
	// To). Both are required; To - From is at most MaxSummarySpan.
	From, To time.Time
	// Window splits the range into hours, days, weeks or months of
	// TimeZone (a row per window that has usage); WholeRange, the default,
	// sums it whole.
	Window Window
	// TimeZone is an IANA zone name (Europe/Paris); default UTC. Windows are
	// its calendar's: a day in New York starts at its midnight, and a day
	// that loses or gains an hour to daylight saving is 23 or 25 hours long.
	TimeZone string
	// By groups each window's usage by a dimension too; ByNone, the default,
	// does not.
	By Dimension
	// Values keeps only these values of By (user ids as strings for ByUser),
	// at most MaxSummaryValues; empty keeps all.
	Values []string
}

// Bounds of a summary.
const (
	MaxSummarySpan    = 100 * 366 * 24 * time.Hour
	MaxSummaryWindows = 100000
	MaxSummaryValues  = 1000
)

// Totals are sums of events: how many (Failed of them failed), and their
// quantities and credits. Voided events count in none of them; corrected
// ones count as corrected.
type Totals struct {
	Events   int64 `json:"events"`
	Failed   int64 `json:"failed"`
	Quantity int64 `json:"quantity"`
	Credits  int64 `json:"credits"`
}

func (t *Totals) add(o Totals) {
	t.Events += o.Events
	t.Failed += o.Failed
	t.Quantity += o.Quantity
	t.Credits += o.Credits
}

// SummaryRow is the usage of one window (its start, in the summary's time
// zone; zero for WholeRange) and one value of the dimension ("" for
// ByNone, and for events without a feature or model).
type SummaryRow struct {
	Window time.Time `json:"window,omitzero"`
	Value  string    `json:"value,omitzero"`
	Totals
}

// Summary is a summary's rows, ordered by window then value, and their
// sum. Windows and values without usage have no row.
type Summary struct {
	Rows  []SummaryRow `json:"rows"`
	Total Totals       `json:"total"`
}

// Summarize sums the workspace's usage, exactly: what a GROUP BY of its
// events by date_trunc(window, occurred_at, zone) and the dimension would
// give, counting events recorded late or a moment ago, corrections and
// voids, and events since deleted by retention (whose rollups remain). It
// reads the rollups, not the events: a year by day in a zone whose days
// start on a UTC hour reads at most 24 rollup rows per day and value, and
// in UTC one. Events themselves are read only where a window or the range
// starts inside a quarter hour. An event deleted by retention is counted
// there no more: summarise such a period on quarter hours.
func (s *Service) Summarize(ctx context.Context, t *tenancy.Tenant, p SummaryParams) (Summary, error) {
	if err := usable(t); err != nil {
		return Summary{}, err
	}
	args, err := p.args()
	if err != nil {
		return Summary{}, err
	}
	// First which buckets and stretches of events to sum, then the sum,
	// planned knowing them.
	rows, err := query(ctx, t, stmtSummaryPieces, tenancy.Args{
		"from": args["from"], "to": args["to"], "window": args["window"], "time_zone": args["time_zone"]})
	if err != nil {
		return Summary{}, summaryError(err)
	}
	ranges := map[int64][2][]time.Time{}
	var edges []time.Time
	var (
		grain  int64
		lo, hi time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&grain, &lo, &hi}, func() error {
		if grain == 0 && len(edges) < 4 && (lo.Equal(p.From) || hi.Equal(p.To)) {
			edges = append(edges, lo, hi)
			return nil
		}
		r := ranges[grain]
		ranges[grain] = [2][]time.Time{append(r[0], lo), append(r[1], hi)}
		return nil
	})
	if err != nil {
		return Summary{}, summaryError(err)
	}
	for _, g := range []int64{1440, 60, 15, 0} {
		if _, ok := ranges[g]; !ok {
			ranges[g] = [2][]time.Time{{}, {}}
		}
	}
	// An absent edge is an empty range, which the planner sees as such
	// (NULL bounds made it plan a parallel scan of nothing).
	edge := func(i int) time.Time {
		if i < len(edges) {
			return edges[i]
		}
		return p.From
	}
	delete(args, "from")
	delete(args, "to")
	args["day_los"], args["day_his"] = ranges[1440][0], ranges[1440][1]
	args["hour_los"], args["hour_his"] = ranges[60][0], ranges[60][1]
	args["quarter_los"], args["quarter_his"] = ranges[15][0], ranges[15][1]
	args["raw_los"], args["raw_his"] = ranges[0][0], ranges[0][1]
	args["edge1_lo"], args["edge1_hi"], args["edge2_lo"], args["edge2_hi"] = edge(0), edge(1), edge(2), edge(3)
	rows, err = query(ctx, t, stmtSummary, args)
	if err != nil {
		return Summary{}, summaryError(err)
	}
	out := Summary{Rows: []SummaryRow{}}
	var (
		window pgtype.Timestamptz
		r      SummaryRow
	)
	_, err = pgx.ForEachRow(rows, []any{&window, &r.Value, &r.Events, &r.Failed, &r.Quantity, &r.Credits}, func() error {
		r.Window = time.Time{}
		if window.Valid {
			r.Window = window.Time.In(p.location())
		}
		out.Rows = append(out.Rows, r)
		out.Total.add(r.Totals)
		return nil
	})
	if err != nil {
		return Summary{}, summaryError(err)
	}
	return out, nil
}

// summaryError names a time zone that the database does not know.
func summaryError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "22023" {
		return &tenancy.InvalidInputError{Field: "summary time zone", Reason: pgErr.Message}
	}
	return fmt.Errorf("usage: summarize: %w", err)
}

func (p SummaryParams) location() *time.Location {
	if p.TimeZone == "" {
		return time.UTC
	}
	loc, err := loadLocation(p.TimeZone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// locations caches time.LoadLocation, which reads the zone's file each
// time. Zone names come from the host's code or its users' settings; the
// cache holds only names that exist, of which there are a few hundred.
var locations sync.Map

func loadLocation(name string) (*time.Location, error) {
	if l, ok := locations.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	locations.Store(name, l)
	return l, nil
}

// windowLength is the shortest a window of w can be, to bound how many a
// range holds.
var windowLength = map[Window]time.Duration{Hourly: time.Hour, Daily: 23 * time.Hour, Weekly: 7*24*time.Hour - time.Hour, Monthly: 28*24*time.Hour - time.Hour}

func (p SummaryParams) args() (tenancy.Args, error) {
	if err := p.Window.valid(); err != nil {
		return nil, err
	}
	if err := p.By.valid(); err != nil {
		return nil, err
	}
	switch {
	case p.From.IsZero() || p.To.IsZero():
		return nil, &tenancy.InvalidInputError{Field: "summary range", Reason: "needs both From and To"}
	case !p.From.Before(p.To):
		return nil, &tenancy.InvalidInputError{Field: "summary range", Reason: "From is not before To"}
	case p.To.Sub(p.From) > MaxSummarySpan:
		return nil, &tenancy.InvalidInputError{Field: "summary range", Reason: fmt.Sprintf("spans more than %s", MaxSummarySpan)}
	}
	if l, ok := windowLength[p.Window]; ok && p.To.Sub(p.From)/l > MaxSummaryWindows {
		return nil, &tenancy.InvalidInputError{Field: "summary range", Reason: fmt.Sprintf("holds more than %d %s windows", MaxSummaryWindows, p.Window)}
	}
	zone := p.TimeZone
	if zone == "" {
		zone = "UTC"
	}
	if err := checkText("summary time zone", zone); err != nil {
		return nil, err
	}
	if _, err := loadLocation(zone); err != nil || zone == "Local" {
		return nil, &tenancy.InvalidInputError{Field: "summary time zone", Reason: fmt.Sprintf("%q is not an IANA time zone name", zone)}
	}
	var values []string
	if len(p.Values) > 0 {
		if p.By == ByNone {
			return nil, &tenancy.InvalidInputError{Field: "summary values", Reason: "are given without a dimension (By)"}
		}
		if len(p.Values) > MaxSummaryValues {
			return nil, &tenancy.InvalidInputError{Field: "summary values", Reason: fmt.Sprintf("are %d; the limit is %d", len(p.Values), MaxSummaryValues)}
		}
		for _, v := range p.Values {
			if err := checkText("summary value", v); err != nil {
				return nil, err
			}
		}
		values = p.Values
	}
	dimension := string(p.By)
	if p.By == ByNone {
		dimension = "total" // the rollups' own dimension for it
	}
	return tenancy.Args{
		"from": p.From.UTC(), "to": p.To.UTC(), "window": string(p.Window), "time_zone": zone,
		"dimension": dimension, "by_value": p.By != ByNone, "values": values,
	}, nil
}

// UserTotalsParams ask for the usage of many users at once, for an admin
// list that shows each member's usage beside their name.
type UserTotalsParams struct {
	Users    []tenancy.UserID // at most MaxSummaryValues
	From, To time.Time
}

// UserTotals sums the usage of each of p.Users over [From, To), in one
// query; a user without usage has zero Totals.
func (s *Service) UserTotals(ctx context.Context, t *tenancy.Tenant, p UserTotalsParams) (map[tenancy.UserID]Totals, error) {
	values := make([]string, len(p.Users))
	for i, u := range p.Users {
		if err := u.Valid(); err != nil {
			return nil, err
		}
		values[i] = u.String()
	}
	out := make(map[tenancy.UserID]Totals, len(p.Users))
	if len(values) == 0 {
		if err := usable(t); err != nil {
			return nil, err
		}
		return out, nil
	}
	sum, err := s.Summarize(ctx, t, SummaryParams{From: p.From, To: p.To, By: ByUser, Values: values})
	if err != nil {
		return nil, err
	}
	for _, u := range p.Users {
		out[u] = Totals{}
	}
	for _, r := range sum.Rows {
		u, err := tenancy.ParseUserID(r.Value)
		if err != nil {
			return nil, fmt.Errorf("usage: user totals: %w", err)
		}
		out[u] = r.Totals
	}
	return out, nil
}
