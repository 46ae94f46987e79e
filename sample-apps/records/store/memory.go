package store

import (
	"context"
	"fmt"
	"sync"
)

// Memory is an in-memory Store with the same semantics as Redis, for tests.
type Memory struct {
	mu       sync.Mutex
	patients map[string]Patient
	pOrder   []string
	records  map[string]Record
	rOrder   map[string][]string
	idem     map[string]string // scope:key -> hash " " id
	// Err, if set, is returned by every call (to test error paths).
	Err error
}

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{patients: map[string]Patient{}, records: map[string]Record{}, rOrder: map[string][]string{}, idem: map[string]string{}}
}

func (m *Memory) replay(scope string, idem Idempotency) (string, error) {
	v, ok := m.idem[scope+":"+idem.Key]
	if !ok {
		return "", nil
	}
	var hash, id string
	if _, err := fmt.Sscanf(v, "%s %s", &hash, &id); err != nil {
		return "", err
	}
	if hash != idem.RequestHash {
		return "", ErrIdempotencyConflict
	}
	return id, nil
}

// Ping implements Store.
func (m *Memory) Ping(context.Context) error { return m.Err }

// CreatePatient implements Store.
func (m *Memory) CreatePatient(_ context.Context, p *Patient, idem Idempotency) (*Patient, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return nil, false, m.Err
	}
	if id, err := m.replay("patient", idem); err != nil || id != "" {
		if err != nil {
			return nil, false, err
		}
		got := m.patients[id]
		return &got, true, nil
	}
	if _, dup := m.patients[p.ID]; dup {
		return nil, false, fmt.Errorf("id %s already exists", p.ID)
	}
	p.Version = 1
	m.patients[p.ID] = *p
	m.pOrder = append(m.pOrder, p.ID)
	m.idem["patient:"+idem.Key] = idem.RequestHash + " " + p.ID
	out := *p
	return &out, false, nil
}

// GetPatient implements Store.
func (m *Memory) GetPatient(_ context.Context, id string) (*Patient, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return nil, m.Err
	}
	p, ok := m.patients[id]
	if !ok {
		return nil, ErrNotFound
	}
	return &p, nil
}

// ListPatients implements Store.
func (m *Memory) ListPatients(_ context.Context, offset, limit int) ([]*Patient, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return nil, 0, m.Err
	}
	out := []*Patient{}
	for i := offset; i < len(m.pOrder) && i < offset+limit; i++ {
		p := m.patients[m.pOrder[i]]
		out = append(out, &p)
	}
	return out, len(m.pOrder), nil
}

// UpdatePatient implements Store.
func (m *Memory) UpdatePatient(_ context.Context, p *Patient) (*Patient, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return nil, m.Err
	}
	cur, ok := m.patients[p.ID]
	if !ok {
		return nil, ErrNotFound
	}
	if cur.Version != p.Version {
		return nil, fmt.Errorf("%w: stored version is %d, the update was based on %d", ErrVersionConflict, cur.Version, p.Version)
	}
	out := *p
	out.Version++
	m.patients[p.ID] = out
	return &out, nil
}

// CreateRecord implements Store.
func (m *Memory) CreateRecord(_ context.Context, r *Record, idem Idempotency) (*Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return nil, false, m.Err
	}
	if id, err := m.replay("record", idem); err != nil || id != "" {
		if err != nil {
			return nil, false, err
		}
		got := m.records[id]
		return &got, true, nil
	}
	if _, ok := m.patients[r.PatientID]; !ok {
		return nil, false, ErrPatientNotFound
	}
	r.Version = 1
	m.records[r.ID] = *r
	m.rOrder[r.PatientID] = append(m.rOrder[r.PatientID], r.ID)
	m.idem["record:"+idem.Key] = idem.RequestHash + " " + r.ID
	out := *r
	return &out, false, nil
}

// Replayed implements Store.
func (m *Memory) Replayed(_ context.Context, idem Idempotency) (*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, err := m.replay("record", idem)
	if err != nil || id == "" {
		return nil, err
	}
	r := m.records[id]
	return &r, nil
}

// GetRecord implements Store.
func (m *Memory) GetRecord(_ context.Context, id string) (*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return nil, m.Err
	}
	r, ok := m.records[id]
	if !ok {
		return nil, ErrNotFound
	}
	return &r, nil
}

// ListRecords implements Store.
func (m *Memory) ListRecords(_ context.Context, pid string) ([]*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return nil, m.Err
	}
	if _, ok := m.patients[pid]; !ok {
		return nil, ErrPatientNotFound
	}
	out := []*Record{}
	for _, id := range m.rOrder[pid] {
		r := m.records[id]
		out = append(out, &r)
	}
	return out, nil
}

// UpdateRecord implements Store.
func (m *Memory) UpdateRecord(_ context.Context, r *Record) (*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return nil, m.Err
	}
	cur, ok := m.records[r.ID]
	if !ok {
		return nil, ErrNotFound
	}
	if cur.Version != r.Version {
		return nil, fmt.Errorf("%w: stored version is %d, the update was based on %d", ErrVersionConflict, cur.Version, r.Version)
	}
	out := *r
	out.Version++
	m.records[r.ID] = out
	return &out, nil
}
