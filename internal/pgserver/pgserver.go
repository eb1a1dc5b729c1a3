// Package pgserver finds a PostgreSQL server to run against, for the test
// harness and the demo alike: a URL from the environment, then the local
// server on 127.0.0.1:5432, then a throwaway container when a Docker engine
// answers.
package pgserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// LocalURL is the server every development machine of the project runs.
// $MB_TEST_LOCAL_URL replaces it, for a machine whose server listens
// elsewhere.
const LocalURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func localURL() string {
	if url := os.Getenv("MB_TEST_LOCAL_URL"); url != "" {
		return url
	}
	return LocalURL
}

// ContainerImage is started when neither an URL nor the local server answers.
const ContainerImage = "postgres:15-alpine"

// ErrNoServer means no server could be found by any route.
var ErrNoServer = errors.New("no PostgreSQL server found")

// Server is a reachable server, given by the URL of a maintenance database
// (one that may be connected to while other databases are created and
// dropped) as a role allowed to create databases.
type Server struct {
	URL    string
	Source string // how it was found, for messages: "$MB_TEST_DATABASE_URL", "local", "container"
	stop   func(context.Context) error
}

// Close stops the server if Find started it; a found server is left alone.
func (s *Server) Close(ctx context.Context) error {
	if s.stop == nil {
		return nil
	}
	return s.stop(ctx)
}

// Find returns the first server that answers: the first non-empty variable
// among envVars (an explicit URL must work, or Find fails), then LocalURL,
// then a testcontainers Postgres. The error lists every route tried.
func Find(ctx context.Context, envVars ...string) (*Server, error) {
	for _, name := range envVars {
		if url := os.Getenv(name); url != "" {
			if err := ping(ctx, url); err != nil {
				return nil, fmt.Errorf("$%s is set but does not answer: %w", name, err)
			}
			return &Server{URL: url, Source: "$" + name}, nil
		}
	}
	var tried []string
	if len(envVars) > 0 {
		tried = append(tried, "$"+strings.Join(envVars, ", $")+": not set")
	}
	local := localURL()
	localErr := ping(ctx, local)
	if localErr == nil {
		return &Server{URL: local, Source: "local"}, nil
	}
	tried = append(tried, fmt.Sprintf("%s: %v", local, localErr))

	srv, err := startContainer(ctx)
	if err == nil {
		return srv, nil
	}
	tried = append(tried, fmt.Sprintf("testcontainers: %v", err))
	return nil, fmt.Errorf("%w; tried %s", ErrNoServer, strings.Join(tried, "; "))
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}

func startContainer(ctx context.Context) (*Server, error) {
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return nil, err
	}
	healthCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := provider.Health(healthCtx); err != nil {
		return nil, fmt.Errorf("no Docker engine answers: %w", err)
	}
	ctr, err := tcpostgres.Run(ctx, ContainerImage,
		tcpostgres.WithDatabase("postgres"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("start %s: %w", ContainerImage, err)
	}
	url, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = ctr.Terminate(context.WithoutCancel(ctx))
		return nil, err
	}
	return &Server{URL: url, Source: "container", stop: func(ctx context.Context) error { return ctr.Terminate(ctx) }}, nil
}
