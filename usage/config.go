package usage

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/meterbase/meterbase/tenancy"
)

// Config configures a Service. A nil *Config means the defaults.
type Config struct {
	// Logger receives a line for the rare event worth one (a Recorder
	// retrying a flush, or events the database refused after a Recorder
	// accepted them). Default: silent.
	Logger *slog.Logger
	// Clock tells the time: when an event that names no time happened, when
	// it was recorded, and what "too far in the future" is judged against.
	// Default: nil, the database's now() (the transaction's start), so that
	// every replica of a host agrees. Tests set it to move time.
	Clock func() time.Time
	// MaxFutureSkew is how far ahead of now an event may be dated (clocks
	// of the machines that report usage drift). Default 5 minutes; at most
	// 24 hours.
	MaxFutureSkew time.Duration
	// MaxMetadataBytes bounds an event's metadata, as JSON. Default 4096;
	// at most 65536 (the schema's own bound).
	MaxMetadataBytes int
}

// Defaults and bounds of Config.
const (
	DefaultMaxFutureSkew    = 5 * time.Minute
	DefaultMaxMetadataBytes = 4096
	maxMetadataBytes        = 65536
	maxFutureSkew           = 24 * time.Hour
)

// config is a Config checked, with its defaults filled in.
type config struct {
	logger      *slog.Logger
	clock       func() time.Time
	futureSkew  time.Duration
	maxMetadata int
}

func (c *Config) resolve() (config, error) {
	r := config{logger: slog.New(slog.DiscardHandler), futureSkew: DefaultMaxFutureSkew, maxMetadata: DefaultMaxMetadataBytes}
	if c == nil {
		return r, nil
	}
	if c.Logger != nil {
		r.logger = c.Logger
	}
	r.clock = c.Clock
	switch {
	case c.MaxFutureSkew < 0 || c.MaxFutureSkew > maxFutureSkew:
		return config{}, &tenancy.InvalidInputError{Field: "Config.MaxFutureSkew", Reason: fmt.Sprintf("%s is not between 0 and %s", c.MaxFutureSkew, maxFutureSkew)}
	case c.MaxFutureSkew > 0:
		r.futureSkew = c.MaxFutureSkew
	}
	switch {
	case c.MaxMetadataBytes < 0 || c.MaxMetadataBytes > maxMetadataBytes:
		return config{}, &tenancy.InvalidInputError{Field: "Config.MaxMetadataBytes", Reason: fmt.Sprintf("%d is not between 0 and %d", c.MaxMetadataBytes, maxMetadataBytes)}
	case c.MaxMetadataBytes > 0:
		r.maxMetadata = c.MaxMetadataBytes
	}
	return r, nil
}

// now returns the clock's time to send with a statement, or nil for the
// database's now().
func (c config) now() *time.Time {
	if c.clock == nil {
		return nil
	}
	t := c.clock().UTC().Truncate(time.Microsecond)
	return &t
}

// Service is the usage history of every workspace. Make it once with
// NewService and share it; every method takes the tenant it acts for.
type Service struct {
	cfg   config
	types *typeCache
	// viaUnnest makes RecordBatch send arrays instead of staging the
	// events, for the benchmark that compares the two.
	viaUnnest bool
}

// NewService returns the usage service. A nil cfg means the defaults.
func NewService(cfg *Config) (*Service, error) {
	c, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	return &Service{cfg: c, types: newTypeCache()}, nil
}

// EventID identifies a usage event.
type EventID = tenancy.ID[eventKind]

type eventKind struct{}

func (eventKind) IDKind() string { return "usage event" }

// AdjustmentID identifies a void or correction of an event.
type AdjustmentID = tenancy.ID[adjustmentKind]

type adjustmentKind struct{}

func (adjustmentKind) IDKind() string { return "usage adjustment" }

// ParseEventID parses an event id in any of the usual UUID spellings.
func ParseEventID(s string) (EventID, error) { return tenancy.ParseID[eventKind](s) }

// ParseAdjustmentID parses an adjustment id.
func ParseAdjustmentID(s string) (AdjustmentID, error) { return tenancy.ParseID[adjustmentKind](s) }
