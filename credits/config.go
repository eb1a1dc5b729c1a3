package credits

import (
	"log/slog"
	"time"
)

// Config configures a Ledger. A nil *Config means the defaults.
type Config struct {
	// Logger receives a line for the rare event worth one. Default: silent.
	Logger *slog.Logger
	// Clock says what time it is for every call: when holds and lots
	// expire, when a scheduled grant takes effect, the instant journal
	// entries are stamped with. It is read once per call (once per batch
	// for coalesced calls, as the batch is sent) and truncated to
	// microseconds, Postgres's precision. Default (nil): the database's
	// now(), the start of the call's transaction. A host that sets it must
	// keep it from going backwards: a journal whose instants go backwards
	// says less than it should.
	Clock func() time.Time
	// NoCoalescing turns coalescing off: every spend, hold, capture and
	// release is then a single call of its own (see the package
	// documentation, Coalescing).
	NoCoalescing bool
	// MaxBatch is the most requests sent in one batch: 0 means
	// DefaultMaxBatch (32), and more than MaxMaxBatch (256) means
	// MaxMaxBatch.
	MaxBatch int
	// MaxInFlight is how many requests or batches of one workspace (for
	// one scope user, through one pool) this Ledger has in flight at once;
	// what comes meanwhile queues and goes in batches as turns free up.
	// 0 means DefaultMaxInFlight (2): about as many as the database server
	// has cores to run them is best, since each statement and each commit
	// costs the server however little they carry. Of these, an account
	// never has more than one, except while the callers of a batch that
	// failed whole run their requests alone (at once, within its turn).
	MaxInFlight int
}

// now returns the instant to pass to SQL: nil for the database's clock.
func (l *Ledger) now() *time.Time {
	if l.cfg.Clock == nil {
		return nil
	}
	t := l.cfg.Clock().UTC().Truncate(time.Microsecond)
	return &t
}

func (l *Ledger) logger() *slog.Logger {
	if l.cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.cfg.Logger
}
