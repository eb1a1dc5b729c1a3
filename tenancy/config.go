package tenancy

import "log/slog"

// Config configures the repository services of this package (Users,
// Workspaces, Members). Every meterbase package has a Config of the same
// kind; a nil *Config means the defaults.
type Config struct {
	// Logger receives a line for the rare event worth a log line (a cleanup
	// that failed after the caller's context ended, say). Default: silent.
	Logger *slog.Logger
}

// logger returns the configured logger, or one that discards.
func (c *Config) logger() *slog.Logger {
	if c == nil || c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}
