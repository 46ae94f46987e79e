package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Keys of the Secret the self-managed mode keeps its state in.
const (
	KeyCACert     = "ca.crt"
	KeyCAKey      = "ca.key"
	KeyCert       = "tls.crt"
	KeyKey        = "tls.key"
	KeyNextCACert = "next-ca.crt"
	KeyNextCAKey  = "next-ca.key"
	KeyPrevCACert = "prev-ca.crt"
	// AnnotationStagedAt records when the next CA entered the caBundle.
	AnnotationStagedAt = "countersign.dev/next-ca-staged-at"
)

// Source is what the TLS server needs: the current certificate, read per handshake from memory.
type Source interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Ready() bool
}

// Hooks report rotation steps and the certificate in use (for metrics); all optional.
type Hooks struct {
	Step     func(step string) // staged, promoted, reissued, error
	Loaded   func(notAfter time.Time)
	CABundle func()
}

// Manager is the self-managed mode. Every replica runs one: they coordinate through the Secret's
// resourceVersion (an update from a stale read fails with a conflict and is retried on the next
// tick), so no leader election is needed.
//
// Rotation never fails an admission because it happens in two steps:
//  1. staged: when the serving certificate has less than RotateBefore left, a new CA is
//     generated and added to the caBundle beside the current one (the server keeps serving the
//     old certificate, which the bundle still trusts);
//  2. promoted: once the new CA has been in the caBundle for Overlap (and the configuration read
//     back contains it), a serving certificate is issued from it and served; the old CA stays
//     in the bundle as the previous CA, so replicas that have not reloaded yet are still trusted.
type Manager struct {
	Client      kubernetes.Interface
	Namespace   string
	SecretName  string
	WebhookName string   // MutatingWebhookConfiguration whose caBundle is managed
	Hosts       []string // serving certificate DNS names and IPs
	Validity    time.Duration
	// RotateBefore starts a rotation when the serving certificate has less than this left.
	RotateBefore time.Duration
	// Overlap is how long a new CA is in the caBundle before certificates from it are served.
	Overlap time.Duration
	// Interval between syncs (each reads the Secret and the webhook configuration).
	Interval time.Duration
	Log      *slog.Logger
	Hooks    Hooks
	Now      func() time.Time

	cur    atomic.Pointer[tls.Certificate]
	curPEM []byte
}

// Validate names the flag at fault.
func (m *Manager) Validate() error {
	var errs []error
	if m.Namespace == "" {
		errs = append(errs, errors.New("namespace: required"))
	}
	if m.SecretName == "" {
		errs = append(errs, errors.New("cert-secret: required"))
	}
	if m.WebhookName == "" {
		errs = append(errs, errors.New("webhook-config: required"))
	}
	if len(m.Hosts) == 0 {
		errs = append(errs, errors.New("cert-hosts: at least one DNS name or IP required"))
	}
	if m.Validity <= 0 || m.RotateBefore <= 0 || m.RotateBefore >= m.Validity {
		errs = append(errs, fmt.Errorf("cert-rotate-before: %s, expected more than 0 and less than cert-validity %s", m.RotateBefore, m.Validity))
	}
	if m.Overlap <= 0 || m.Overlap+2*m.Interval >= m.RotateBefore {
		errs = append(errs, fmt.Errorf("cert-overlap: %s, expected more than 0 and, plus two cert-sync-interval (%s), less than cert-rotate-before %s", m.Overlap, m.Interval, m.RotateBefore))
	}
	if m.Interval <= 0 {
		errs = append(errs, fmt.Errorf("cert-sync-interval: %s, expected more than 0", m.Interval))
	}
	return errors.Join(errs...)
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Manager) step(s string) {
	if m.Hooks.Step != nil {
		m.Hooks.Step(s)
	}
}

// GetCertificate serves the current certificate.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := m.cur.Load()
	if c == nil {
		return nil, errors.New("no serving certificate loaded yet")
	}
	return c, nil
}

// Ready reports whether a certificate is loaded and not expired.
func (m *Manager) Ready() bool {
	c := m.cur.Load()
	return c != nil && m.now().Before(c.Leaf.NotAfter)
}

// Run syncs until ctx ends. A failed sync is logged and retried; the last certificate stays.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.Interval)
	defer t.Stop()
	for {
		if err := m.Sync(ctx); err != nil && ctx.Err() == nil {
			m.step("error")
			m.Log.Warn("webhook certificate sync failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sync runs one round: ensure the Secret holds a valid state, advance a rotation if due,
// make the caBundle match, and load the serving certificate.
func (m *Manager) Sync(ctx context.Context) error {
	sec, err := m.Client.CoreV1().Secrets(m.Namespace).Get(ctx, m.SecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		sec, err = m.create(ctx)
	}
	if err != nil {
		return fmt.Errorf("secret %s/%s: %w", m.Namespace, m.SecretName, err)
	}
	bundle, err := m.bundle(sec)
	if err != nil {
		return err
	}
	inBundle, err := m.ensureCABundle(ctx, bundle)
	if err != nil {
		return err
	}
	if next, err := m.advance(ctx, sec, inBundle); err != nil {
		if !apierrors.IsConflict(err) {
			return err
		}
		m.Log.Debug("secret changed by another replica; will re-read", "err", err)
	} else if next != nil {
		sec = next
		if bundle, err = m.bundle(sec); err != nil {
			return err
		}
		if _, err = m.ensureCABundle(ctx, bundle); err != nil {
			return err
		}
	}
	return m.load(sec)
}

func (m *Manager) create(ctx context.Context) (*corev1.Secret, error) {
	now := m.now()
	ca, err := NewCA("countersign-injector-ca", now, now.Add(2*m.Validity))
	if err != nil {
		return nil, err
	}
	leaf, err := NewLeaf(ca, m.Hosts, now, now.Add(m.Validity))
	if err != nil {
		return nil, err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: m.SecretName, Namespace: m.Namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "countersign-injector"}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{KeyCACert: ca.CertPEM, KeyCAKey: ca.KeyPEM, KeyCert: leaf.CertPEM, KeyKey: leaf.KeyPEM},
	}
	out, err := m.Client.CoreV1().Secrets(m.Namespace).Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return m.Client.CoreV1().Secrets(m.Namespace).Get(ctx, m.SecretName, metav1.GetOptions{})
	}
	if err == nil {
		m.Log.Info("webhook CA and serving certificate created", "secret", m.SecretName)
	}
	return out, err
}

// advance moves the rotation one step if one is due; it returns the updated Secret, or nil.
func (m *Manager) advance(ctx context.Context, sec *corev1.Secret, nextInBundle bool) (*corev1.Secret, error) {
	now := m.now()
	leaf, err := ParseCert(sec.Data[KeyCert])
	if err != nil {
		return nil, fmt.Errorf("secret %s: %s: %w", m.SecretName, KeyCert, err)
	}
	ca := Pair{CertPEM: sec.Data[KeyCACert], KeyPEM: sec.Data[KeyCAKey]}
	caCert, err := ParseCert(ca.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("secret %s: %s: %w", m.SecretName, KeyCACert, err)
	}
	upd := sec.DeepCopy()
	if upd.Annotations == nil {
		upd.Annotations = map[string]string{}
	}
	_, staged := sec.Data[KeyNextCACert]
	due := leaf.NotAfter.Sub(now) < m.RotateBefore || caCert.NotAfter.Sub(now) < m.RotateBefore+m.Validity
	var step string
	switch {
	case staged:
		at, err := time.Parse(time.RFC3339Nano, sec.Annotations[AnnotationStagedAt])
		if err == nil && now.Sub(at) < m.Overlap {
			return nil, nil
		}
		if !nextInBundle {
			return nil, nil // the webhook configuration does not trust it yet
		}
		next := Pair{CertPEM: sec.Data[KeyNextCACert], KeyPEM: sec.Data[KeyNextCAKey]}
		nl, err := NewLeaf(next, m.Hosts, now, now.Add(m.Validity))
		if err != nil {
			return nil, err
		}
		upd.Data[KeyPrevCACert] = ca.CertPEM
		upd.Data[KeyCACert], upd.Data[KeyCAKey] = next.CertPEM, next.KeyPEM
		upd.Data[KeyCert], upd.Data[KeyKey] = nl.CertPEM, nl.KeyPEM
		delete(upd.Data, KeyNextCACert)
		delete(upd.Data, KeyNextCAKey)
		delete(upd.Annotations, AnnotationStagedAt)
		step = "promoted"
	case due:
		next, err := NewCA("countersign-injector-ca", now, now.Add(2*m.Validity))
		if err != nil {
			return nil, err
		}
		upd.Data[KeyNextCACert], upd.Data[KeyNextCAKey] = next.CertPEM, next.KeyPEM
		upd.Annotations[AnnotationStagedAt] = now.UTC().Format(time.RFC3339Nano)
		step = "staged"
	case !covers(leaf, m.Hosts):
		// Same CA, new names: nothing changes in the caBundle, so reissue at once.
		nl, err := NewLeaf(ca, m.Hosts, now, now.Add(m.Validity))
		if err != nil {
			return nil, err
		}
		upd.Data[KeyCert], upd.Data[KeyKey] = nl.CertPEM, nl.KeyPEM
		step = "reissued"
	default:
		return nil, nil
	}
	out, err := m.Client.CoreV1().Secrets(m.Namespace).Update(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	m.step(step)
	m.Log.Info("webhook certificate rotation", "step", step, "secret", m.SecretName)
	return out, nil
}

// bundle is the CA certificates the webhook configuration must trust: previous (while
// unexpired), current and next.
func (m *Manager) bundle(sec *corev1.Secret) ([]byte, error) {
	var out bytes.Buffer
	for _, k := range []string{KeyPrevCACert, KeyCACert, KeyNextCACert} {
		b, ok := sec.Data[k]
		if !ok {
			continue
		}
		c, err := ParseCert(b)
		if err != nil {
			return nil, fmt.Errorf("secret %s: %s: %w", m.SecretName, k, err)
		}
		if k == KeyPrevCACert && m.now().After(c.NotAfter) {
			continue
		}
		out.Write(b)
	}
	return out.Bytes(), nil
}

// ensureCABundle sets every webhook's caBundle in the configuration to bundle. It reports
// whether the configuration (as read back) holds exactly that bundle.
func (m *Manager) ensureCABundle(ctx context.Context, bundle []byte) (bool, error) {
	api := m.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwc, err := api.Get(ctx, m.WebhookName, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("mutatingwebhookconfiguration %s: %w", m.WebhookName, err)
	}
	changed := false
	for i := range mwc.Webhooks {
		if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, bundle) {
			mwc.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return true, nil
	}
	if _, err := api.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return false, nil
		}
		return false, fmt.Errorf("mutatingwebhookconfiguration %s: update caBundle: %w", m.WebhookName, err)
	}
	if m.Hooks.CABundle != nil {
		m.Hooks.CABundle()
	}
	m.Log.Info("webhook caBundle updated", "webhook_config", m.WebhookName, "cas", bytes.Count(bundle, []byte("BEGIN CERTIFICATE")))
	return true, nil
}

// load puts the Secret's serving certificate in the atomic pointer when it changed. A bad one
// is refused and the previous one kept.
func (m *Manager) load(sec *corev1.Secret) error {
	certPEM, keyPEM := sec.Data[KeyCert], sec.Data[KeyKey]
	if bytes.Equal(certPEM, m.curPEM) && m.cur.Load() != nil {
		return nil
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("secret %s: serving certificate: %w", m.SecretName, err)
	}
	m.cur.Store(&c)
	m.curPEM = certPEM
	if m.Hooks.Loaded != nil {
		m.Hooks.Loaded(c.Leaf.NotAfter)
	}
	m.Log.Info("webhook serving certificate loaded", "not_after", c.Leaf.NotAfter, "serial", c.Leaf.SerialNumber.Text(16))
	return nil
}

// FileSource serves a certificate and key from files (cert-manager mode), reloading them when
// they change; a failed reload keeps the previous pair.
type FileSource struct {
	CertFile, KeyFile string
	// Name says which certificate in logs (default "webhook").
	Name   string
	Log    *slog.Logger
	Loaded func(notAfter time.Time)

	cur    atomic.Pointer[tls.Certificate]
	curPEM []byte
}

// Reload reads the files once.
func (f *FileSource) Reload() error {
	c, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return err
	}
	leaf := c.Leaf
	raw := leaf.Raw
	if bytes.Equal(raw, f.curPEM) {
		return nil
	}
	f.cur.Store(&c)
	f.curPEM = raw
	if f.Loaded != nil {
		f.Loaded(leaf.NotAfter)
	}
	f.Log.Info(f.name()+" serving certificate loaded from file", "file", f.CertFile, "not_after", leaf.NotAfter)
	return nil
}

// Run reloads every interval until ctx ends.
func (f *FileSource) Run(ctx context.Context, interval time.Duration) {
	reloadEvery(ctx, interval, f.Reload, func(err error) {
		f.Log.Warn(f.name()+" certificate reload failed; keeping the previous one", "err", err)
	})
}

// reloadEvery calls reload every interval until ctx ends, reporting failures to failed (the
// caller keeps what it had).
func reloadEvery(ctx context.Context, interval time.Duration, reload func() error, failed func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := reload(); err != nil {
				failed(err)
			}
		}
	}
}

func (f *FileSource) name() string {
	if f.Name == "" {
		return "webhook"
	}
	return f.Name
}

// GetCertificate serves the current certificate.
func (f *FileSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := f.cur.Load()
	if c == nil {
		return nil, errors.New("no serving certificate loaded")
	}
	return c, nil
}

// Ready reports whether an unexpired certificate is loaded.
func (f *FileSource) Ready() bool {
	c := f.cur.Load()
	return c != nil && time.Now().Before(c.Leaf.NotAfter)
}
