// Package store is the records API's storage: patients and their records, behind a small
// interface with a Redis implementation (go-redis) and an in-memory fake for tests.
//
// Creates are idempotent: each carries an idempotency key and a hash of the request; the first
// create under a key writes, and every later one with the same key returns what the first
// wrote (or ErrIdempotencyConflict when the request differs). The check and the write are one
// atomic step in the store, so concurrent retries cannot both write.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors the API maps to status codes.
var (
	ErrNotFound            = errors.New("not found")
	ErrPatientNotFound     = errors.New("patient not found")
	ErrVersionConflict     = errors.New("version conflict")
	ErrIdempotencyConflict = errors.New("idempotency key reused with a different request")
)

// Patient is a patient's demographic record.
type Patient struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	DateOfBirth string    `json:"dateOfBirth"`
	Sex         string    `json:"sex,omitempty"`
	MRN         string    `json:"mrn,omitempty"`
	Notes       string    `json:"notes,omitempty"`
	Version     int       `json:"version"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Record kinds.
const (
	KindNote = "note"
	KindScan = "scan"
)

// Record is one entry in a patient's file: a clinical note or a scan with its diagnosis.
type Record struct {
	ID        string     `json:"id"`
	PatientID string     `json:"patientId"`
	Kind      string     `json:"kind"`
	Title     string     `json:"title"`
	Text      string     `json:"text,omitempty"`
	Scan      *Scan      `json:"scan,omitempty"`
	Diagnosis *Diagnosis `json:"diagnosis,omitempty"`
	Version   int        `json:"version"`
	CreatedAt time.Time  `json:"createdAt"`
	UpdatedAt time.Time  `json:"updatedAt"`
}

// Scan describes an uploaded image (the pixels themselves are not kept).
type Scan struct {
	Format string `json:"format"` // png or raw
	Width  int    `json:"width"`
	Height int    `json:"height"`
	SHA256 string `json:"sha256"` // hex, of the uploaded bytes
}

// Diagnosis is the inference server's answer and the receipt its sidecar handed back.
type Diagnosis struct {
	Model         string  `json:"model"`
	ModelVersion  string  `json:"modelVersion,omitempty"`
	Label         string  `json:"label"`
	Probabilities []Class `json:"probabilities"`
	// Response is the inference server's response body exactly as received; the receipt's
	// bodySha256 covers these bytes.
	Response string `json:"response"`
	// ResponseEncoding is "" when Response is the body itself (REST, JSON), or "grpc" when
	// Response is the standard base64 of a gRPC response body (binary).
	ResponseEncoding string `json:"responseEncoding,omitempty"`
	// Receipt is the Countersign-Receipt header value as the sidecar handed it to the app
	// (base64url JSON), or "" when none came back.
	Receipt string    `json:"receipt,omitempty"`
	At      time.Time `json:"at"`
}

// Class is one label's score.
type Class struct {
	Label string  `json:"label"`
	Score float64 `json:"score"`
}

// Idempotency identifies a create request: Key is the client's Idempotency-Key (or a fresh
// random key when the client sent none) and RequestHash a digest of what was asked.
type Idempotency struct {
	Key         string
	RequestHash string
}

// Store keeps patients and records.
type Store interface {
	// CreatePatient writes p (ID, timestamps and Version 1 set by the caller) unless idem.Key
	// was used before; it returns the stored patient and whether it was a replay.
	CreatePatient(ctx context.Context, p *Patient, idem Idempotency) (*Patient, bool, error)
	GetPatient(ctx context.Context, id string) (*Patient, error)
	// ListPatients returns patients in creation order and the total count.
	ListPatients(ctx context.Context, offset, limit int) ([]*Patient, int, error)
	// UpdatePatient replaces the patient if its stored version is p.Version, storing
	// p.Version+1.
	UpdatePatient(ctx context.Context, p *Patient) (*Patient, error)

	CreateRecord(ctx context.Context, r *Record, idem Idempotency) (*Record, bool, error)
	GetRecord(ctx context.Context, id string) (*Record, error)
	ListRecords(ctx context.Context, patientID string) ([]*Record, error)
	UpdateRecord(ctx context.Context, r *Record) (*Record, error)

	// Replayed looks up an idempotency key of a record create without writing: it returns the
	// record created under it, or nil. Scan uploads check it before calling the inference
	// server, so a retried upload does not run inference again.
	Replayed(ctx context.Context, idem Idempotency) (*Record, error)

	Ping(ctx context.Context) error
}
