// Package events writes Kubernetes Events about admitted and rejected pods, off the admission
// path: Event queues them and a single goroutine writes them; when the queue is full the event
// is dropped and counted, so a slow API server never slows admission.
package events

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/countersign/countersign/injector/inject"
)

// Component is the Event source.
const Component = "countersign-injector"

// Recorder queues Events and writes them in the background.
type Recorder struct {
	client  kubernetes.Interface
	log     *slog.Logger
	queue   chan *corev1.Event
	dropped func()
}

// New returns a recorder with a queue of size n; dropped is called for each event dropped.
func New(client kubernetes.Interface, log *slog.Logger, n int, dropped func()) *Recorder {
	return &Recorder{client: client, log: log, queue: make(chan *corev1.Event, n), dropped: dropped}
}

// Event queues an Event about the pod (whose name may still be empty: pods created by
// controllers arrive with only generateName).
func (r *Recorder) Event(pod *corev1.Pod, namespace string, reason inject.Reason, message string) {
	name := pod.Name
	if name == "" {
		name = pod.GenerateName
	}
	typ := corev1.EventTypeNormal
	if reason.Denied() {
		typ = corev1.EventTypeWarning
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: fmt.Sprintf("%s.", strings.TrimRight(trim(name, 200), "-.")),
			Namespace:    namespace,
		},
		InvolvedObject: corev1.ObjectReference{
			Kind:       "Pod",
			APIVersion: "v1",
			Namespace:  namespace,
			Name:       name,
			UID:        pod.UID,
		},
		Reason:         string(reason),
		Message:        trim(message, 1024),
		Type:           typ,
		Source:         corev1.EventSource{Component: Component},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
	select {
	case r.queue <- ev:
	default:
		if r.dropped != nil {
			r.dropped()
		}
	}
}

// Run writes queued events until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-r.queue:
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := r.client.CoreV1().Events(ev.Namespace).Create(cctx, ev, metav1.CreateOptions{})
			cancel()
			if err != nil {
				r.log.Debug("event not written", "reason", ev.Reason, "err", err)
			}
		}
	}
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
