package tenancy

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Page asks for one page of a list. Every list in meterbase takes it.
//
// Keyset paging (the default) follows Cursor, the Next of the previous
// page: pages stay consistent while rows come and go, and a page deep in a
// list costs what the first one does. Offset paging (Offset > 0) is for
// interfaces that jump to page n; it may skip or repeat rows that change
// meanwhile, and costs more the deeper it goes. WithTotal also counts
// every item of the list (one more query).
type Page struct {
	Limit     int    `json:"limit,omitempty"`  // default DefaultPageLimit, at most MaxPageLimit
	Cursor    string `json:"cursor,omitempty"` // "" for the first page
	Offset    int    `json:"offset,omitempty"` // offset paging; not with Cursor
	WithTotal bool   `json:"withTotal,omitempty"`
}

// DefaultPageLimit and MaxPageLimit bound Page.Limit.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 1000
)

// List is one page of a list's items, shaped for a client cache: Next is
// the cursor of the following keyset page ("" after the last), NextOffset
// the offset of the following offset page (0 after the last), Total is set
// when the Page asked for it.
type List[T any] struct {
	Items      []T    `json:"items"`
	Next       string `json:"nextCursor,omitempty"`
	NextOffset int    `json:"nextOffset,omitempty"`
	Total      *int64 `json:"total,omitempty"`
}

// Keyset is a position in a keyset-paged list: the sort key of the last
// item of a page. A list uses the fields its order needs (a time and an
// id, say) and leaves the others zero.
type Keyset struct {
	Time time.Time
	Int  int64
	Text string
	ID   uuid.UUID
}

// PageQuery is a Page checked and decoded for one list of one tenant.
type PageQuery struct {
	Limit     int
	After     *Keyset // nil on the first keyset page
	Offset    int
	WithTotal bool
}

// Query checks the page and decodes its cursor for the list named list of
// t's workspace: a cursor of another workspace or list, or one that was
// changed or cut, is a *CursorError.
func (p Page) Query(t *Tenant, list string) (PageQuery, error) {
	if err := t.usable(); err != nil {
		return PageQuery{}, err
	}
	return p.query(t.scope.workspace, list)
}

func (p Page) query(ws WorkspaceID, list string) (PageQuery, error) {
	q := PageQuery{Limit: p.Limit, Offset: p.Offset, WithTotal: p.WithTotal}
	switch {
	case p.Limit == 0:
		q.Limit = DefaultPageLimit
	case p.Limit < 0 || p.Limit > MaxPageLimit:
		return PageQuery{}, &InvalidInputError{Field: "page limit", Reason: fmt.Sprintf("%d is not between 1 and %d", p.Limit, MaxPageLimit)}
	}
	switch {
	case p.Offset < 0:
		return PageQuery{}, &InvalidInputError{Field: "page offset", Reason: fmt.Sprintf("%d is negative", p.Offset)}
	case p.Offset > 0 && p.Cursor != "":
		return PageQuery{}, &InvalidInputError{Field: "page", Reason: "has both a cursor and an offset; use one"}
	}
	if p.Cursor != "" {
		k, err := decodeCursor(ws, list, p.Cursor)
		if err != nil {
			return PageQuery{}, err
		}
		q.After = &k
	}
	return q, nil
}

// Paginate makes the List of a page whose items were fetched with one
// more than q.Limit: the extra one only says that there is a next page,
// whose cursor is the key of the page's last item.
func Paginate[T any](t *Tenant, list string, q PageQuery, items []T, key func(T) Keyset) List[T] {
	return paginate(t.Scope().Workspace(), list, q, items, key)
}

func paginate[T any](ws WorkspaceID, list string, q PageQuery, items []T, key func(T) Keyset) List[T] {
	if items == nil {
		items = []T{}
	}
	if len(items) <= q.Limit {
		return List[T]{Items: items}
	}
	items = items[:q.Limit]
	if q.Offset > 0 {
		// An offset page is followed by an offset page: a cursor would
		// switch the caller to keyset paging midway.
		return List[T]{Items: items, NextOffset: q.Offset + q.Limit}
	}
	return List[T]{Items: items, Next: encodeCursor(ws, list, key(items[len(items)-1]))}
}

// ErrInvalidCursor matches every *CursorError.
var ErrInvalidCursor = errors.New("tenancy: invalid cursor")

// CursorError is a cursor that this list did not hand out: malformed or
// cut, changed since, of another workspace, of another list, or of another
// version of meterbase.
type CursorError struct{ Reason string }

func (e *CursorError) Error() string { return "tenancy: invalid cursor: " + e.Reason }

// Is makes a CursorError match ErrInvalidCursor and ErrInvalidInput.
func (e *CursorError) Is(target error) bool {
	return target == ErrInvalidCursor || target == ErrInvalidInput
}

// A cursor is base64url of
//
//	version(1) | workspace(16) | list(4) | fields(1) | the fields set | check(8)
//
// where list is a hash of the list's name, fields a bit per Keyset field,
// and check the first 8 bytes of a SHA-256 of everything before it. The
// check detects a cursor that was cut, corrupted or edited; it is not a
// secret (a cursor only ever moves a page within the tenant's own rows,
// which every query filters on anyway), and the workspace and list bind a
// cursor to the one list it came from.
const (
	cursorVersion = 1
	cursorCheck   = 8
)

// The bits of a cursor's fields byte.
const (
	fieldTime = 1 << iota
	fieldInt
	fieldText
	fieldID
)

// maxCursorBytes bounds what is decoded; real cursors are far shorter.
const maxCursorBytes = 1024

var cursorEncoding = base64.RawURLEncoding

func listHash(list string) []byte {
	h := sha256.Sum256([]byte("meterbase.cursor.list:" + list))
	return h[:4]
}

func encodeCursor(ws WorkspaceID, list string, k Keyset) string {
	var b bytes.Buffer
	b.WriteByte(cursorVersion)
	wsID := ws.UUID()
	b.Write(wsID[:])
	b.Write(listHash(list))
	var fields byte
	if !k.Time.IsZero() {
		fields |= fieldTime
	}
	if k.Int != 0 {
		fields |= fieldInt
	}
	if k.Text != "" {
		fields |= fieldText
	}
	if k.ID != uuid.Nil {
		fields |= fieldID
	}
	b.WriteByte(fields)
	if fields&fieldTime != 0 {
		b.Write(binary.BigEndian.AppendUint64(nil, uint64(k.Time.UnixMicro())))
	}
	if fields&fieldInt != 0 {
		b.Write(binary.BigEndian.AppendUint64(nil, uint64(k.Int)))
	}
	if fields&fieldText != 0 {
		b.Write(binary.AppendUvarint(nil, uint64(len(k.Text))))
		b.WriteString(k.Text)
	}
	if fields&fieldID != 0 {
		b.Write(k.ID[:])
	}
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:cursorCheck])
	return cursorEncoding.EncodeToString(b.Bytes())
}

func decodeCursor(ws WorkspaceID, list, cursor string) (Keyset, error) {
	bad := func(reason string) (Keyset, error) { return Keyset{}, &CursorError{Reason: reason} }
	if len(cursor) > maxCursorBytes {
		return bad("too long to be one of this list's")
	}
	raw, err := cursorEncoding.DecodeString(cursor)
	if err != nil || len(raw) < 1+16+4+1+cursorCheck {
		return bad("malformed or cut; pass the Next of a previous page as it was")
	}
	body, check := raw[:len(raw)-cursorCheck], raw[len(raw)-cursorCheck:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:cursorCheck], check) {
		return bad("changed or cut since it was handed out")
	}
	if body[0] != cursorVersion {
		return bad(fmt.Sprintf("made by another version of meterbase (%d)", body[0]))
	}
	wsID := ws.UUID()
	if !bytes.Equal(body[1:17], wsID[:]) {
		return bad("it belongs to another workspace")
	}
	if !bytes.Equal(body[17:21], listHash(list)) {
		return bad("it belongs to another list")
	}
	fields, rest := body[21], body[22:]
	var k Keyset
	take := func(n int) ([]byte, bool) {
		if len(rest) < n {
			return nil, false
		}
		b := rest[:n]
		rest = rest[n:]
		return b, true
	}
	if fields&fieldTime != 0 {
		b, ok := take(8)
		if !ok {
			return bad("malformed")
		}
		k.Time = time.UnixMicro(int64(binary.BigEndian.Uint64(b))).UTC()
	}
	if fields&fieldInt != 0 {
		b, ok := take(8)
		if !ok {
			return bad("malformed")
		}
		k.Int = int64(binary.BigEndian.Uint64(b))
	}
	if fields&fieldText != 0 {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return bad("malformed")
		}
		k.Text = string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
	}
	if fields&fieldID != 0 {
		b, ok := take(16)
		if !ok {
			return bad("malformed")
		}
		k.ID = uuid.UUID(b)
	}
	if len(rest) != 0 || fields&^(fieldTime|fieldInt|fieldText|fieldID) != 0 {
		return bad("malformed")
	}
	return k, nil
}
