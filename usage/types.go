package usage

import (
	"fmt"

	"github.com/meterbase/meterbase/tenancy"
)

// OperationType is the kind of AI operation an event records: a key of the
// operation_types reference table. The built-ins are the constants below;
// a host adds its own with Service.RegisterOperationTypes.
type OperationType string

// The built-in operation types, seeded by the migrations.
const (
	ChatCompletion     OperationType = "chat.completion"
	Embedding          OperationType = "embedding"
	ImageGeneration    OperationType = "image.generation"
	ImageEdit          OperationType = "image.edit"
	AudioTranscription OperationType = "audio.transcription"
	AudioSpeech        OperationType = "audio.speech"
	VideoGeneration    OperationType = "video.generation"
	Moderation         OperationType = "moderation"
	Rerank             OperationType = "rerank"
	ToolCall           OperationType = "tool.call"
)

// BuiltinOperationTypes lists the built-in operation types.
func BuiltinOperationTypes() []OperationType {
	return []OperationType{ChatCompletion, Embedding, ImageGeneration, ImageEdit, AudioTranscription,
		AudioSpeech, VideoGeneration, Moderation, Rerank, ToolCall}
}

// The rules of the operation_types, usage_events and features CHECK
// constraints, so that bad input fails before any SQL. They are written
// out rather than matched with regexp, which took a quarter of the time a
// batch spends checking its events; a test holds them to these patterns:
//
//	operation type  ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$   at most 64 bytes
//	unit            ^[a-z][a-z_]*$                         at most 32
//	feature key     ^[a-z][a-z0-9_]*([.-][a-z0-9_]+)*$     at most 64

func lower(c byte) bool { return c >= 'a' && c <= 'z' }

func wordByte(c byte) bool { return lower(c) || (c >= '0' && c <= '9') || c == '_' }

func isOperationType(s string) bool {
	if len(s) == 0 || len(s) > 64 || !lower(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if i+1 == len(s) || !lower(s[i+1]) {
				return false
			}
		case !wordByte(c):
			return false
		}
	}
	return true
}

func isUnit(s string) bool {
	if len(s) == 0 || len(s) > 32 || !lower(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !lower(c) && c != '_' {
			return false
		}
	}
	return true
}

func isFeatureKey(s string) bool {
	if len(s) == 0 || len(s) > 64 || !lower(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.' || c == '-':
			if i+1 == len(s) || !wordByte(s[i+1]) {
				return false
			}
		case !wordByte(c):
			return false
		}
	}
	return true
}

// Valid returns a typed error (tenancy.ErrInvalidInput) for a malformed
// operation type. Whether it exists is for the database to say.
func (o OperationType) Valid() error {
	if !isOperationType(string(o)) {
		return &tenancy.InvalidInputError{Field: "operation type",
			Reason: fmt.Sprintf("%q is not 1 to 64 lower-case dot-separated words (chat.completion)", string(o))}
	}
	return nil
}

func checkUnit(unit string) error {
	if !isUnit(unit) {
		return &tenancy.InvalidInputError{Field: "unit", Reason: fmt.Sprintf("%q is not 1 to 32 lower-case letters and underscores (input_tokens)", unit)}
	}
	return nil
}

// Status says how the operation ended.
type Status string

const (
	Succeeded Status = "succeeded"
	Failed    Status = "failed"
)

// Valid returns a typed error for anything but succeeded or failed.
func (s Status) Valid() error {
	if s != Succeeded && s != Failed {
		return &tenancy.InvalidInputError{Field: "status", Reason: fmt.Sprintf("%q is not succeeded or failed", string(s))}
	}
	return nil
}

// Price is the price in force when an event happened: Credits per PerUnits
// units of its quantity.
type Price struct {
	Credits  int64 `json:"credits"`
	PerUnits int64 `json:"perUnits"`
}

// Dimension is what a summary groups by besides time.
type Dimension string

const (
	ByNone          Dimension = ""
	ByOperationType Dimension = "operation_type"
	ByFeature       Dimension = "feature"
	ByUser          Dimension = "user"
	ByModel         Dimension = "model"
	ByUnit          Dimension = "unit"
)

func (d Dimension) valid() error {
	switch d {
	case ByNone, ByOperationType, ByFeature, ByUser, ByModel, ByUnit:
		return nil
	}
	return &tenancy.InvalidInputError{Field: "summary dimension", Reason: fmt.Sprintf("%q is not one of operation_type, feature, user, model, unit or none", string(d))}
}

// Window is the span of time a summary adds up per row.
type Window string

const (
	// WholeRange sums the whole range in one row per dimension value.
	WholeRange Window = ""
	Hourly     Window = "hour"
	Daily      Window = "day"
	// Weekly windows are ISO weeks, Monday to Monday in the summary's zone.
	Weekly  Window = "week"
	Monthly Window = "month"
)

func (w Window) valid() error {
	switch w {
	case WholeRange, Hourly, Daily, Weekly, Monthly:
		return nil
	}
	return &tenancy.InvalidInputError{Field: "summary window", Reason: fmt.Sprintf("%q is not hour, day, week, month or the whole range", string(w))}
}

// Order is the order of a list by time.
type Order string

const (
	NewestFirst Order = "" // the default
	OldestFirst Order = "oldest_first"
)

// Column is a field of Event a list may load; the others stay zero. ID and
// OccurredAt, the list's order, are always loaded.
type Column string

const (
	ColUser           Column = "userId"
	ColOperationType  Column = "operationType"
	ColFeatureKey     Column = "featureKey"
	ColQuantity       Column = "quantity"
	ColUnit           Column = "unit"
	ColCredits        Column = "credits"
	ColPrice          Column = "price"
	ColModel          Column = "model"
	ColStatus         Column = "status"
	ColDuration       Column = "durationMs"
	ColMetadata       Column = "metadata"
	ColIdempotencyKey Column = "idempotencyKey"
	ColLedgerEntry    Column = "ledgerEntryId"
	ColRecordedAt     Column = "recordedAt"
	ColVoidedAt       Column = "voidedAt"
	ColVersion        Column = "version" // with updatedAt
)

// AllColumns are every Column, which a list loads when it names none.
func AllColumns() []Column {
	return []Column{ColUser, ColOperationType, ColFeatureKey, ColQuantity, ColUnit, ColCredits, ColPrice, ColModel,
		ColStatus, ColDuration, ColMetadata, ColIdempotencyKey, ColLedgerEntry, ColRecordedAt, ColVoidedAt, ColVersion}
}
