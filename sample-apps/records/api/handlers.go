package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/sample-apps/records/inference"
	"github.com/countersign/countersign/sample-apps/records/scan"
	"github.com/countersign/countersign/sample-apps/records/store"
)

// PatientInput is what a client sends to create or update a patient.
type PatientInput struct {
	Name        string `json:"name"`
	DateOfBirth string `json:"dateOfBirth"`
	Sex         string `json:"sex,omitempty"`
	MRN         string `json:"mrn,omitempty"`
	Notes       string `json:"notes,omitempty"`
	// Version is required on update: the version the client read.
	Version int `json:"version,omitempty"`
}

var mrnRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,32}$`)

func (a *API) validatePatient(in *PatientInput, update bool) error {
	errs := validationError{}
	in.Name = text(errs, "name", in.Name, true, 200)
	in.Notes = text(errs, "notes", in.Notes, false, 2000)
	in.DateOfBirth = strings.TrimSpace(in.DateOfBirth)
	if in.DateOfBirth == "" {
		errs["dateOfBirth"] = "required (YYYY-MM-DD)"
	} else if d, err := time.Parse("2006-01-02", in.DateOfBirth); err != nil {
		errs["dateOfBirth"] = fmt.Sprintf("%q is not a date in the form YYYY-MM-DD", in.DateOfBirth)
	} else if d.After(a.o.Now()) {
		errs["dateOfBirth"] = "is in the future"
	} else if d.Year() < 1900 {
		errs["dateOfBirth"] = "is before 1900"
	}
	switch in.Sex {
	case "", "female", "male", "other", "unknown":
	default:
		errs["sex"] = fmt.Sprintf("%q, expected female, male, other or unknown", in.Sex)
	}
	in.MRN = strings.TrimSpace(in.MRN)
	if in.MRN != "" && !mrnRE.MatchString(in.MRN) {
		errs["mrn"] = "1 to 32 letters, digits or '-'"
	}
	if update && in.Version < 1 {
		errs["version"] = "required on update: the version you read (prevents lost updates)"
	}
	if !update && in.Version != 0 {
		errs["version"] = "set by the server on create; leave it out"
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func (a *API) createPatient(w http.ResponseWriter, r *http.Request) {
	var in PatientInput
	raw, err := decodeJSON(w, r, &in)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.validatePatient(&in, false); err != nil {
		a.fail(w, r, err)
		return
	}
	idem, err := idempotency(r, "patient", raw)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	now := a.o.Now().UTC()
	p := &store.Patient{
		ID:          newID("p_"),
		Name:        in.Name,
		DateOfBirth: in.DateOfBirth,
		Sex:         in.Sex,
		MRN:         in.MRN,
		Notes:       in.Notes,
		Version:     1,
		CreatedAt:   now,
		UpdatedAt:   now,
	}
	got, replayed, err := a.o.Store.CreatePatient(r.Context(), p, idem)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.created(w, "patient", "/api/patients/"+got.ID, replayed, got)
}

func (a *API) created(w http.ResponseWriter, kind, location string, replayed bool, v any) {
	w.Header().Set("Location", location)
	if replayed {
		a.replays.WithLabelValues(kind).Inc()
		w.Header().Set("Idempotent-Replayed", "true")
		writeJSON(w, http.StatusOK, v)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func (a *API) listPatients(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	offset, limit := 0, 100
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			a.fail(w, r, fmt.Errorf("%w: offset %q, expected a non-negative integer", errBadRequest, s))
			return
		}
		offset = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			a.fail(w, r, fmt.Errorf("%w: limit %q, expected 1 to 1000", errBadRequest, s))
			return
		}
		limit = n
	}
	ps, total, err := a.o.Store.ListPatients(r.Context(), offset, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if ps == nil {
		ps = []*store.Patient{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"patients": ps, "total": total, "offset": offset, "limit": limit})
}

func (a *API) getPatient(w http.ResponseWriter, r *http.Request) {
	getByID(a, w, r, a.o.Store.GetPatient)
}

// getByID answers with the object the path's id names, or the error.
func getByID[T any](a *API, w http.ResponseWriter, r *http.Request, get func(context.Context, string) (T, error)) {
	id, err := pathID(r)
	if err == nil {
		var v T
		if v, err = get(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, v)
			return
		}
	}
	a.fail(w, r, err)
}

func (a *API) updatePatient(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var in PatientInput
	if _, err := decodeJSON(w, r, &in); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.validatePatient(&in, true); err != nil {
		a.fail(w, r, err)
		return
	}
	cur, err := a.o.Store.GetPatient(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	p := *cur
	p.Name, p.DateOfBirth, p.Sex, p.MRN, p.Notes = in.Name, in.DateOfBirth, in.Sex, in.MRN, in.Notes
	p.Version, p.UpdatedAt = in.Version, a.o.Now().UTC()
	got, err := a.o.Store.UpdatePatient(r.Context(), &p)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, got)
}

// NoteInput is a clinical note.
type NoteInput struct {
	Title   string `json:"title"`
	Text    string `json:"text"`
	Version int    `json:"version,omitempty"`
}

func validateNote(in *NoteInput, update bool) error {
	errs := validationError{}
	in.Title = text(errs, "title", in.Title, true, 200)
	in.Text = text(errs, "text", in.Text, false, 20000)
	if update && in.Version < 1 {
		errs["version"] = "required on update: the version you read (prevents lost updates)"
	}
	if !update && in.Version != 0 {
		errs["version"] = "set by the server on create; leave it out"
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func (a *API) createNote(w http.ResponseWriter, r *http.Request) {
	pid, err := pathID(r)
	if err != nil {
		a.fail(w, r, store.ErrPatientNotFound)
		return
	}
	var in NoteInput
	raw, err := decodeJSON(w, r, &in)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := validateNote(&in, false); err != nil {
		a.fail(w, r, err)
		return
	}
	idem, err := idempotency(r, "record", raw)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	now := a.o.Now().UTC()
	rec := &store.Record{
		ID:        newID("r_"),
		PatientID: pid,
		Kind:      store.KindNote,
		Title:     in.Title,
		Text:      in.Text,
		Version:   1,
		CreatedAt: now,
		UpdatedAt: now,
	}
	got, replayed, err := a.o.Store.CreateRecord(r.Context(), rec, idem)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.created(w, "record", "/api/records/"+got.ID, replayed, got)
}

func (a *API) listRecords(w http.ResponseWriter, r *http.Request) {
	pid, err := pathID(r)
	if err != nil {
		a.fail(w, r, store.ErrPatientNotFound)
		return
	}
	rs, err := a.o.Store.ListRecords(r.Context(), pid)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if rs == nil {
		rs = []*store.Record{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"records": rs})
}

func (a *API) getRecord(w http.ResponseWriter, r *http.Request) {
	getByID(a, w, r, a.o.Store.GetRecord)
}

// updateRecord changes a record's title and text; a scan's diagnosis is never edited.
func (a *API) updateRecord(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var in NoteInput
	if _, err := decodeJSON(w, r, &in); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := validateNote(&in, true); err != nil {
		a.fail(w, r, err)
		return
	}
	cur, err := a.o.Store.GetRecord(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rec := *cur
	rec.Title, rec.Text, rec.Version, rec.UpdatedAt = in.Title, in.Text, in.Version, a.o.Now().UTC()
	got, err := a.o.Store.UpdateRecord(r.Context(), &rec)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, got)
}

// uploadScan: the body is image/png, or application/octet-stream raw 8-bit greyscale with
// ?width=&height= (default 64×64). The scan goes to the inference server through the sidecar;
// the record keeps the diagnosis, the response body and the receipt.
func (a *API) uploadScan(w http.ResponseWriter, r *http.Request) {
	pid, err := pathID(r)
	if err != nil {
		a.fail(w, r, store.ErrPatientNotFound)
		return
	}
	q := r.URL.Query()
	title := q.Get("title")
	if title == "" {
		title = "Chest scan"
	}
	errs := validationError{}
	title = text(errs, "title", title, true, 200)
	if len(errs) > 0 {
		a.fail(w, r, errs)
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "image/png" && mt != "application/octet-stream" {
		a.fail(w, r, fmt.Errorf("%w: Content-Type %q, expected image/png or application/octet-stream (raw 8-bit greyscale with ?width=&height=)", errUnsupported, r.Header.Get("Content-Type")))
		return
	}
	body, err := readBody(w, r, MaxScanBody)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var img *scan.Image
	if mt == "image/png" {
		img, err = scan.DecodePNG(body)
	} else {
		wd, ht := scan.Size, scan.Size
		for _, p := range []struct {
			name string
			v    *int
		}{{"width", &wd}, {"height", &ht}} {
			if s := q.Get(p.name); s != "" {
				n, perr := strconv.Atoi(s)
				if perr != nil || n < 1 || n > scan.MaxSide {
					a.fail(w, r, validationError{p.name: fmt.Sprintf("%q, expected 1 to %d", s, scan.MaxSide)})
					return
				}
				*p.v = n
			}
		}
		img, err = scan.DecodeRaw(body, wd, ht)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	sum := sha256.Sum256(body)
	content := []byte(mt + "\n" + title + "\n" + hex.EncodeToString(sum[:]))
	idem, err := idempotency(r, "record", content)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	// A retried upload is answered from the store without running inference again.
	if prev, err := a.o.Store.Replayed(r.Context(), idem); err != nil {
		a.fail(w, r, err)
		return
	} else if prev != nil {
		a.created(w, "record", "/api/records/"+prev.ID, true, prev)
		return
	}
	if _, err := a.o.Store.GetPatient(r.Context(), pid); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = store.ErrPatientNotFound
		}
		a.fail(w, r, err)
		return
	}
	recID := newID("r_")
	res, err := a.o.Inference.Diagnose(r.Context(), recID, img.Tensor, scan.Size)
	if err != nil {
		a.infer.WithLabelValues("error").Inc()
		a.o.Logger.Warn("inference failed", "patient", pid, "err", err)
		a.fail(w, r, err)
		return
	}
	outcome := "ok"
	if res.Receipt == "" {
		outcome = "no_receipt"
	}
	a.infer.WithLabelValues(outcome).Inc()
	now := a.o.Now().UTC()
	d := &store.Diagnosis{
		Model:        res.Model,
		ModelVersion: res.ModelVersion,
		Label:        res.Label,
		Response:     string(res.Body),
		Receipt:      res.Receipt,
		At:           now,
	}
	if res.Encoding == inference.EncodingGRPC {
		d.Response, d.ResponseEncoding = base64.StdEncoding.EncodeToString(res.Body), res.Encoding
	}
	for _, c := range res.Classes {
		d.Probabilities = append(d.Probabilities, store.Class{Label: c.Label, Score: c.Score})
	}
	rec := &store.Record{
		ID:        recID,
		PatientID: pid,
		Kind:      store.KindScan,
		Title:     title,
		Scan:      &store.Scan{Format: img.Format, Width: img.Width, Height: img.Height, SHA256: hex.EncodeToString(sum[:])},
		Diagnosis: d,
		Version:   1,
		CreatedAt: now,
		UpdatedAt: now,
	}
	got, replayed, err := a.o.Store.CreateRecord(r.Context(), rec, idem)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.created(w, "record", "/api/records/"+got.ID, replayed, got)
}
