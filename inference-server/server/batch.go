package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/countersign/countersign/inference-server/oip"
)

// BatchConfig configures dynamic batching for models whose config allows it.
type BatchConfig struct {
	MaxSize   int           // rows per session run; 0 or 1 disables batching
	MaxDelay  time.Duration // how long the first request of a batch waits for more
	QueueSize int           // requests waiting at most; a full queue answers 503
	Workers   int           // batches run concurrently
}

// ErrQueueFull is returned when the batching queue is full.
var ErrQueueFull = errors.New("batching queue is full")

type result struct {
	outputs []oip.Tensor
	err     error
}

type item struct {
	ctx      context.Context
	inputs   []oip.Tensor // model input order, dim 0 is the batch dimension
	rows     int
	enqueued time.Time
	done     chan result // buffered, capacity 1
}

// batcher merges concurrent requests for one model into session runs of up to MaxSize rows.
type batcher struct {
	m     *model
	cfg   BatchConfig
	queue chan *item
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newBatcher(m *model, cfg BatchConfig) *batcher {
	b := &batcher{m: m, cfg: cfg, queue: make(chan *item, cfg.QueueSize), stop: make(chan struct{})}
	workers := max(cfg.Workers, 1)
	b.wg.Add(workers)
	for range workers {
		go b.loop()
	}
	return b
}

// submit enqueues a request without blocking and waits for its result. inputsFree is false when
// it gave up waiting (ctx is done) while a worker may still read the inputs.
func (b *batcher) submit(ctx context.Context, inputs []oip.Tensor, rows int) (outs []oip.Tensor, inputsFree bool, err error) {
	it := &item{
		ctx:      ctx,
		inputs:   inputs,
		rows:     rows,
		enqueued: time.Now(),
		done:     make(chan result, 1),
	}
	select {
	case b.queue <- it:
	default:
		return nil, true, ErrQueueFull
	}
	select {
	case r := <-it.done:
		return r.outputs, true, r.err
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// close stops the workers after the queue drains; call only when no more submits can happen.
func (b *batcher) close() {
	close(b.stop)
	b.wg.Wait()
}

func (b *batcher) loop() {
	defer b.wg.Done()
	var pending *item
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		first := pending
		pending = nil
		if first == nil {
			select {
			case first = <-b.queue:
			case <-b.stop:
				// Drain what is left, then exit.
				for {
					select {
					case it := <-b.queue:
						b.run([]*item{it})
					default:
						return
					}
				}
			}
		}
		batch := []*item{first}
		rows := first.rows
		timer.Reset(b.cfg.MaxDelay)
	collect:
		for rows < b.cfg.MaxSize {
			select {
			case it := <-b.queue:
				if rows+it.rows > b.cfg.MaxSize || !compatible(first, it) {
					pending = it
					break collect
				}
				batch = append(batch, it)
				rows += it.rows
			case <-timer.C:
				break collect
			case <-b.stop:
				break collect
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		b.run(batch)
	}
}

// compatible reports whether two requests can share a run: same non-batch dimensions.
func compatible(a, b *item) bool {
	for i := range a.inputs {
		if !slices.Equal(a.inputs[i].Shape[1:], b.inputs[i].Shape[1:]) {
			return false
		}
	}
	return true
}

func (b *batcher) run(batch []*item) {
	// Drop requests whose client has gone.
	live := batch[:0]
	for _, it := range batch {
		if err := it.ctx.Err(); err != nil {
			it.done <- result{err: err}
			continue
		}
		live = append(live, it)
	}
	if len(live) == 0 {
		return
	}
	start := time.Now()
	for _, it := range live {
		b.m.queueHist.Observe(start.Sub(it.enqueued).Seconds())
	}
	if len(live) == 1 {
		out, err := b.m.run(context.Background(), live[0].inputs, live[0].rows)
		live[0].done <- result{outputs: out, err: err}
		return
	}
	rows := make([]int, len(live))
	total := 0
	for i, it := range live {
		rows[i] = it.rows
		total += it.rows
	}
	inputs := make([]oip.Tensor, len(live[0].inputs))
	for i := range inputs {
		parts := make([]oip.Tensor, len(live))
		for j, it := range live {
			parts[j] = it.inputs[i]
		}
		t, err := concat(parts, total)
		if err != nil {
			for _, it := range live {
				it.done <- result{err: err}
			}
			return
		}
		inputs[i] = t
	}
	out, err := b.m.run(context.Background(), inputs, total)
	if err != nil {
		for _, it := range live {
			it.done <- result{err: err}
		}
		return
	}
	split := make([][]oip.Tensor, len(live))
	for i := range split {
		split[i] = make([]oip.Tensor, len(out))
	}
	for o, t := range out {
		parts, err := splitRows(t, rows)
		if err != nil {
			for _, it := range live {
				it.done <- result{err: err}
			}
			return
		}
		for i := range live {
			split[i][o] = parts[i]
		}
	}
	for i, it := range live {
		it.done <- result{outputs: split[i]}
	}
}

// concat joins tensors along dimension 0.
func concat(parts []oip.Tensor, rows int) (oip.Tensor, error) {
	t := oip.Tensor{Name: parts[0].Name, Datatype: parts[0].Datatype, Shape: slices.Clone(parts[0].Shape)}
	t.Shape[0] = int64(rows)
	for _, p := range parts {
		t.NonFinite = t.NonFinite || p.NonFinite
	}
	switch parts[0].Data.(type) {
	case []float32:
		t.Data = concatData[float32](parts)
	case []float64:
		t.Data = concatData[float64](parts)
	case []int64:
		t.Data = concatData[int64](parts)
	case []int32:
		t.Data = concatData[int32](parts)
	case []int16:
		t.Data = concatData[int16](parts)
	case []int8:
		t.Data = concatData[int8](parts)
	case []uint64:
		t.Data = concatData[uint64](parts)
	case []uint32:
		t.Data = concatData[uint32](parts)
	case []uint16:
		t.Data = concatData[uint16](parts)
	case []uint8:
		t.Data = concatData[uint8](parts)
	case []bool:
		t.Data = concatData[bool](parts)
	case []string:
		t.Data = concatData[string](parts)
	default:
		return t, fmt.Errorf("batching: unsupported tensor data %T", parts[0].Data)
	}
	return t, nil
}

func concatData[T any](parts []oip.Tensor) []T {
	n := 0
	for _, p := range parts {
		n += len(p.Data.([]T))
	}
	out := make([]T, 0, n)
	for _, p := range parts {
		out = append(out, p.Data.([]T)...)
	}
	return out
}

// splitRows cuts a tensor along dimension 0 into parts of the given row counts.
func splitRows(t oip.Tensor, rows []int) ([]oip.Tensor, error) {
	total := 0
	for _, r := range rows {
		total += r
	}
	if len(t.Shape) == 0 || t.Shape[0] != int64(total) {
		return nil, fmt.Errorf("batching: output %q has shape %v, want %d rows", t.Name, t.Shape, total)
	}
	switch t.Data.(type) {
	case []float32:
		return splitData[float32](t, rows, total), nil
	case []float64:
		return splitData[float64](t, rows, total), nil
	case []int64:
		return splitData[int64](t, rows, total), nil
	case []int32:
		return splitData[int32](t, rows, total), nil
	case []int16:
		return splitData[int16](t, rows, total), nil
	case []int8:
		return splitData[int8](t, rows, total), nil
	case []uint64:
		return splitData[uint64](t, rows, total), nil
	case []uint32:
		return splitData[uint32](t, rows, total), nil
	case []uint16:
		return splitData[uint16](t, rows, total), nil
	case []uint8:
		return splitData[uint8](t, rows, total), nil
	case []bool:
		return splitData[bool](t, rows, total), nil
	case []string:
		return splitData[string](t, rows, total), nil
	}
	return nil, fmt.Errorf("batching: unsupported tensor data %T", t.Data)
}

func splitData[T any](t oip.Tensor, rows []int, total int) []oip.Tensor {
	d := t.Data.([]T)
	per := 0
	if total > 0 {
		per = len(d) / total
	}
	out := make([]oip.Tensor, len(rows))
	off := 0
	for i, r := range rows {
		shape := slices.Clone(t.Shape)
		shape[0] = int64(r)
		out[i] = oip.Tensor{Name: t.Name, Datatype: t.Datatype, Shape: shape, Data: d[off : off+r*per : off+r*per]}
		off += r * per
	}
	return out
}
