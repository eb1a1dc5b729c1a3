package migrations

import (
	"bufio"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/golang-migrate/migrate/v4/source"
)

//go:embed sql/*.sql
var embedded embed.FS

// FS returns the embedded migration files, NNNN_name.up.sql and
// NNNN_name.down.sql at its root, for hosts that run their own migration tool
// (they must give meterbase a version table of its own). The files are as
// written: the version record the Migrator appends to each (Step.Record) is
// not in them, and the host's tool records versions its own way.
func FS() fs.FS {
	sub, err := fs.Sub(embedded, "sql")
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}

// Migration is one embedded schema version.
type Migration struct {
	Version uint   // 1, 2, ...: the NNNN of the file name
	Name    string // the file name's middle part, e.g. "tenancy"
	Up      File
	Down    File
}

// File is one direction of a migration.
type File struct {
	Path   string            // file name inside FS()
	SQL    string            // the file's whole text
	Header map[string]string // the "-- key: value" lines that open the file
}

var fileName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$`)

// List returns every embedded migration in version order.
func List() []Migration {
	list, err := load(FS())
	if err != nil {
		panic(err) // the files are embedded at build time and linted by the tests
	}
	return list
}

// load reads and checks a migration directory: every file named
// NNNN_name.(up|down).sql, each version with both directions, versions
// numbered 1, 2, 3... without gaps.
func load(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	byVersion := map[uint]*Migration{}
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migrations: %q is not named NNNN_name.up.sql or NNNN_name.down.sql", e.Name())
		}
		v, _ := strconv.ParseUint(m[1], 10, 32)
		mig := byVersion[uint(v)]
		if mig == nil {
			mig = &Migration{Version: uint(v), Name: m[2]}
			byVersion[uint(v)] = mig
		}
		if mig.Name != m[2] {
			return nil, fmt.Errorf("migrations: version %04d has two names, %q and %q", v, mig.Name, m[2])
		}
		raw, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, err
		}
		f := File{Path: path.Base(e.Name()), SQL: string(raw), Header: parseHeader(string(raw))}
		if m[3] == "up" {
			mig.Up = f
		} else {
			mig.Down = f
		}
	}
	list := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		list = append(list, *m)
	}
	slices.SortFunc(list, func(a, b Migration) int { return int(a.Version) - int(b.Version) })
	for i, m := range list {
		if m.Version != uint(i+1) {
			return nil, fmt.Errorf("migrations: version %04d follows %04d; versions must be numbered without gaps from 0001", m.Version, i)
		}
		if m.Up.Path == "" || m.Down.Path == "" {
			return nil, fmt.Errorf("migrations: version %04d_%s needs both an up and a down file", m.Version, m.Name)
		}
	}
	return list, nil
}

// parseHeader reads the "-- key: value" comment lines at the top of a file.
func parseHeader(sql string) map[string]string {
	header := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(sql))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, "--")
		if !ok {
			break
		}
		key, value, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		header[strings.TrimSpace(key)] = strings.TrimSpace(value)
	}
	return header
}

// lockTimeoutSetting is the line with which every transactional file bounds
// its lock waits; the lint test holds every file to this exact form.
var lockTimeoutSetting = regexp.MustCompile(`(?m)^SET LOCAL lock_timeout = '([^']*)';`)

// lockTimeoutOf returns the lock_timeout a file sets, "" if it sets none.
// A line inside a comment sets nothing.
func lockTimeoutOf(sql string) string {
	if m := lockTimeoutSetting.FindStringSubmatch(sqlCode(sql)); m != nil {
		return m[1]
	}
	return ""
}

// withLockTimeout returns list with every file's lock_timeout replaced by
// timeout (a Postgres duration such as '100ms'), for tests that must not
// wait the production default.
func withLockTimeout(list []Migration, timeout string) []Migration {
	out := slices.Clone(list)
	set := func(f File) File {
		var b strings.Builder
		last := 0
		// Matched in the code, replaced in the text: the offsets agree.
		for _, loc := range lockTimeoutSetting.FindAllStringIndex(sqlCode(f.SQL), -1) {
			b.WriteString(f.SQL[last:loc[0]])
			b.WriteString("SET LOCAL lock_timeout = '" + timeout + "';")
			last = loc[1]
		}
		b.WriteString(f.SQL[last:])
		f.SQL = b.String()
		return f
	}
	for i := range out {
		out[i].Up, out[i].Down = set(out[i].Up), set(out[i].Down)
	}
	return out
}

// listSource is golang-migrate's view of a []Migration: the files it runs
// are the very texts that Plan prints, each transactional one with its
// version record appended (see bookkeeping). Versions run 1..len(list)
// without gaps, as load guarantees.
type listSource struct {
	list  []Migration
	table string // the version table, schema-qualified and quoted
}

var _ source.Driver = listSource{}

func (s listSource) Open(string) (source.Driver, error) {
	return nil, errors.New("migrations: listSource is not opened by URL")
}

func (s listSource) Close() error { return nil }

func (s listSource) First() (uint, error) {
	if len(s.list) == 0 {
		return 0, os.ErrNotExist
	}
	return 1, nil
}

func (s listSource) Prev(version uint) (uint, error) {
	if version <= 1 || version > uint(len(s.list)) {
		return 0, os.ErrNotExist
	}
	return version - 1, nil
}

func (s listSource) Next(version uint) (uint, error) {
	if version < 1 || version >= uint(len(s.list)) {
		return 0, os.ErrNotExist
	}
	return version + 1, nil
}

func (s listSource) ReadUp(version uint) (io.ReadCloser, string, error) {
	return s.read(version, DirectionUp)
}

func (s listSource) ReadDown(version uint) (io.ReadCloser, string, error) {
	return s.read(version, DirectionDown)
}

func (s listSource) read(version uint, dir Direction) (io.ReadCloser, string, error) {
	if version < 1 || version > uint(len(s.list)) {
		return nil, "", os.ErrNotExist
	}
	m := s.list[version-1]
	f, to := m.Up, version
	if dir == DirectionDown {
		f, to = m.Down, version-1
	}
	return io.NopCloser(strings.NewReader(f.SQL + bookkeeping(f.SQL, to, s.table))), m.Name, nil
}

// bookkeeping is what the migrator appends to a file that will leave the
// database at version to: for a transactional file, the statements that
// write the version table as golang-migrate leaves it after a success
// (version to, clean; no version for 0), so that the file's effect and its
// version commit together or not at all, under the file's own
// lock_timeout. A file that is not a transaction gets nothing: a second
// statement would make it one, which CONCURRENTLY refuses; golang-migrate
// records its version after it.
func bookkeeping(sql string, to uint, table string) string {
	if !isTransactional(sql) {
		return ""
	}
	var b strings.Builder
	if !strings.HasSuffix(sql, "\n") {
		b.WriteByte('\n')
	}
	if len(sqlStatements(sql)) > 0 && !strings.HasSuffix(strings.TrimSpace(sqlCode(sql)), ";") {
		b.WriteString(";\n") // the file's last statement lacks its semicolon
	}
	if to == 0 {
		b.WriteString("-- meterbase: this file's transaction also empties the version table (no version).\n")
	} else {
		fmt.Fprintf(&b, "-- meterbase: this file's transaction also records version %d, clean.\n", to)
	}
	b.WriteString(versionRecord(table, versionArg(to), false))
	return b.String()
}
