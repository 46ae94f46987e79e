package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key layout (one Redis database):
//
//	patient:{id}          hash {json, version}
//	patients              sorted set of patient IDs by creation time (ms)
//	record:{id}           hash {json, version}
//	patient:{id}:records  sorted set of record IDs by creation time (ms)
//	idem:{scope}:{key}    "{requestHash} {id}", expires after IdempotencyTTL
const (
	IdempotencyTTL = 24 * time.Hour
	patientsIndex  = "patients"
)

// createScript writes an object, indexes it and remembers the idempotency key, atomically;
// if the key is already known it writes nothing and returns what the key names.
// KEYS: idem, object, index[, must-exist]. ARGV: json, score, id, idem value, ttl seconds.
var createScript = redis.NewScript(`
local prev = redis.call('GET', KEYS[1])
if prev then return {0, prev} end
if #KEYS >= 4 and redis.call('EXISTS', KEYS[4]) == 0 then return redis.error_reply('NOPARENT') end
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.error_reply('IDTAKEN') end
redis.call('HSET', KEYS[2], 'json', ARGV[1], 'version', '1')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[5])
return {1, ARGV[4]}
`)

// updateScript replaces an object if its version is ARGV[2]. KEYS: object. ARGV: json, version.
var updateScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return redis.error_reply('NOTFOUND') end
if v ~= ARGV[2] then return redis.error_reply('VERSION ' .. v) end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'version', tostring(tonumber(v) + 1))
return 1
`)

// Redis is the Store on a Redis server.
type Redis struct {
	c *redis.Client
}

// NewRedis returns a store using c.
func NewRedis(c *redis.Client) *Redis { return &Redis{c: c} }

func patientKey(id string) string { return "patient:" + id }
func recordKey(id string) string  { return "record:" + id }
func recordsIndex(pid string) string {
	return "patient:" + pid + ":records"
}
func idemKey(scope, key string) string { return "idem:" + scope + ":" + key }

// Ping checks the connection.
func (s *Redis) Ping(ctx context.Context) error { return s.c.Ping(ctx).Err() }

func (s *Redis) create(ctx context.Context, scope string, keys []string, id string, created time.Time, v any, idem Idempotency) (replayID string, err error) {
	js, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	all := append([]string{idemKey(scope, idem.Key)}, keys...)
	res, err := createScript.Run(ctx, s.c, all, js, created.UnixMilli(), id, idem.RequestHash+" "+id, int(IdempotencyTTL/time.Second)).Slice()
	if err != nil {
		switch {
		case strings.HasPrefix(err.Error(), "NOPARENT"):
			return "", ErrPatientNotFound
		case strings.HasPrefix(err.Error(), "IDTAKEN"):
			return "", fmt.Errorf("id %s already exists", id)
		}
		return "", err
	}
	if len(res) != 2 {
		return "", fmt.Errorf("create script: unexpected reply %v", res)
	}
	written, _ := res[0].(int64)
	val, _ := res[1].(string)
	if written == 1 {
		return "", nil
	}
	hash, prevID, ok := strings.Cut(val, " ")
	if !ok {
		return "", fmt.Errorf("idempotency entry %q is malformed", val)
	}
	if hash != idem.RequestHash {
		return "", ErrIdempotencyConflict
	}
	return prevID, nil
}

// CreatePatient implements Store.
func (s *Redis) CreatePatient(ctx context.Context, p *Patient, idem Idempotency) (*Patient, bool, error) {
	prev, err := s.create(ctx, "patient", []string{patientKey(p.ID), patientsIndex}, p.ID, p.CreatedAt, p, idem)
	if err != nil {
		return nil, false, err
	}
	if prev != "" {
		got, err := s.GetPatient(ctx, prev)
		return got, true, err
	}
	return p, false, nil
}

// CreateRecord implements Store.
func (s *Redis) CreateRecord(ctx context.Context, r *Record, idem Idempotency) (*Record, bool, error) {
	prev, err := s.create(ctx, "record", []string{recordKey(r.ID), recordsIndex(r.PatientID), patientKey(r.PatientID)}, r.ID, r.CreatedAt, r, idem)
	if err != nil {
		return nil, false, err
	}
	if prev != "" {
		got, err := s.GetRecord(ctx, prev)
		return got, true, err
	}
	return r, false, nil
}

// Replayed implements Store.
func (s *Redis) Replayed(ctx context.Context, idem Idempotency) (*Record, error) {
	val, err := s.c.Get(ctx, idemKey("record", idem.Key)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	hash, id, ok := strings.Cut(val, " ")
	if !ok {
		return nil, fmt.Errorf("idempotency entry %q is malformed", val)
	}
	if hash != idem.RequestHash {
		return nil, ErrIdempotencyConflict
	}
	return s.GetRecord(ctx, id)
}

func (s *Redis) get(ctx context.Context, key string, v any) error {
	vals, err := s.c.HMGet(ctx, key, "json", "version").Result()
	if err != nil {
		return err
	}
	js, ok := vals[0].(string)
	if !ok {
		return ErrNotFound
	}
	if err := json.Unmarshal([]byte(js), v); err != nil {
		return fmt.Errorf("%s: stored JSON: %w", key, err)
	}
	ver, _ := vals[1].(string)
	n, err := strconv.Atoi(ver)
	if err != nil {
		return fmt.Errorf("%s: stored version %q", key, ver)
	}
	switch o := v.(type) {
	case *Patient:
		o.Version = n
	case *Record:
		o.Version = n
	}
	return nil
}

// GetPatient implements Store.
func (s *Redis) GetPatient(ctx context.Context, id string) (*Patient, error) {
	var p Patient
	if err := s.get(ctx, patientKey(id), &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// GetRecord implements Store.
func (s *Redis) GetRecord(ctx context.Context, id string) (*Record, error) {
	var r Record
	if err := s.get(ctx, recordKey(id), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *Redis) listIDs(ctx context.Context, index string, offset, limit int) ([]string, int, error) {
	pipe := s.c.Pipeline()
	n := pipe.ZCard(ctx, index)
	ids := pipe.ZRange(ctx, index, int64(offset), int64(offset+limit-1))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, err
	}
	return ids.Val(), int(n.Val()), nil
}

func getAll[T any](ctx context.Context, s *Redis, keyOf func(string) string, ids []string) ([]*T, error) {
	out := make([]*T, 0, len(ids))
	for _, id := range ids {
		v := new(T)
		if err := s.get(ctx, keyOf(id), v); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// ListPatients implements Store.
func (s *Redis) ListPatients(ctx context.Context, offset, limit int) ([]*Patient, int, error) {
	ids, n, err := s.listIDs(ctx, patientsIndex, offset, limit)
	if err != nil {
		return nil, 0, err
	}
	ps, err := getAll[Patient](ctx, s, patientKey, ids)
	return ps, n, err
}

// ListRecords implements Store.
func (s *Redis) ListRecords(ctx context.Context, patientID string) ([]*Record, error) {
	if n, err := s.c.Exists(ctx, patientKey(patientID)).Result(); err != nil {
		return nil, err
	} else if n == 0 {
		return nil, ErrPatientNotFound
	}
	ids, _, err := s.listIDs(ctx, recordsIndex(patientID), 0, 10000)
	if err != nil {
		return nil, err
	}
	return getAll[Record](ctx, s, recordKey, ids)
}

func (s *Redis) update(ctx context.Context, key string, version int, v any) error {
	js, err := json.Marshal(v)
	if err != nil {
		return err
	}
	err = updateScript.Run(ctx, s.c, []string{key}, js, strconv.Itoa(version)).Err()
	switch {
	case err == nil:
		return nil
	case strings.HasPrefix(err.Error(), "NOTFOUND"):
		return ErrNotFound
	case strings.HasPrefix(err.Error(), "VERSION"):
		return fmt.Errorf("%w: stored version is %s, the update was based on %d", ErrVersionConflict, strings.TrimPrefix(err.Error(), "VERSION "), version)
	}
	return err
}

// UpdatePatient implements Store.
func (s *Redis) UpdatePatient(ctx context.Context, p *Patient) (*Patient, error) {
	if err := s.update(ctx, patientKey(p.ID), p.Version, p); err != nil {
		return nil, err
	}
	out := *p
	out.Version++
	return &out, nil
}

// UpdateRecord implements Store.
func (s *Redis) UpdateRecord(ctx context.Context, r *Record) (*Record, error) {
	if err := s.update(ctx, recordKey(r.ID), r.Version, r); err != nil {
		return nil, err
	}
	out := *r
	out.Version++
	return &out, nil
}
