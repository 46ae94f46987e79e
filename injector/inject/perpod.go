package inject

// Per-pod settings for workloads that bring their own attestation service and serve browsers
// (charts/healthcare-demo): the attestation service's URL and CA, overriding the injector's
// defaults, and public inbound listeners with an ordinary certificate from a Secret.
// docs/injection.md is the reference.

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/countersign/countersign/proxy/config"
)

const (
	// AnnotationAttestationURL is the attestation service this pod's proxy attests to,
	// https://host[:port] (default: the injector's --attestation-url). The pod's policy must
	// list it among its issuers, or the proxy never becomes ready.
	AnnotationAttestationURL = "countersign.dev/attestation-url"
	// AnnotationAttestationCAKey names the key of the pod's policy ConfigMap holding PEM roots
	// for the attestation service's TLS certificate (default: the injector's
	// --attestation-ca-key); an empty value means the system roots.
	AnnotationAttestationCAKey = "countersign.dev/attestation-ca-key"

	// AnnotationSimMREnclave is the MRENCLAVE a simulated enclave claims (sim attester only;
	// 64 hex digits). Every sidecar runs the same proxy build, so without it every sim proxy
	// claims the same measurement (its binary's digest) and a policy cannot tell workloads
	// apart; with it, the pod's identity in the policy lists this value.
	AnnotationSimMREnclave = "countersign.dev/sim-mrenclave"

	// VolumePublicPrefix starts the names of the volumes holding public listeners' certificates
	// (countersign-public-0, -1, ... in the order of the listeners' annotations).
	VolumePublicPrefix = "countersign-public-"
	// PublicDir holds one folder per public listener, named for it, with tls.crt and tls.key.
	PublicDir = "/etc/countersign/public"
)

var (
	configMapKeyRE = regexp.MustCompile(`^[-._a-zA-Z0-9]{1,253}$`)
)

// parseSimMREnclave returns the measurement a sim proxy claims (zero for the attester's
// default).
func parseSimMREnclave(ann map[string]string, att string) (config.Measurement, error) {
	v, ok := ann[AnnotationSimMREnclave]
	if !ok {
		return config.Measurement{}, nil
	}
	if att != "sim" {
		return config.Measurement{}, annErr(AnnotationSimMREnclave, v, "only meaningful with %s=sim (this pod uses the %s attester, whose enclave is measured by the hardware)", AnnotationAttester, att)
	}
	m, err := config.ParseMeasurement(v)
	if err != nil {
		return config.Measurement{}, annErr(AnnotationSimMREnclave, v, "not an MRENCLAVE (expected 64 hex digits)")
	}
	return m, nil
}

// parseAttestationService returns the attestation service URL for the pod's proxy and the key
// of the policy ConfigMap holding its CA ("" for the system roots).
func (c *Config) parseAttestationService(ann map[string]string) (svcURL, caKey string, err error) {
	svcURL = c.AttestationURL
	if v, ok := ann[AnnotationAttestationURL]; ok {
		u, perr := url.Parse(v)
		if perr != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || checkHostPort(hostPortOf(u)) != nil {
			return "", "", annErr(AnnotationAttestationURL, v, "not an attestation service URL (expected https://host[:port], no path, e.g. https://myattest.weu.attest.azure.net)")
		}
		svcURL = v
	}
	caKey = c.AttestationCAKey
	if v, ok := ann[AnnotationAttestationCAKey]; ok {
		if v != "" && (!configMapKeyRE.MatchString(v) || v == "." || v == "..") {
			return "", "", annErr(AnnotationAttestationCAKey, v, "not a ConfigMap key (expected letters, digits, '-', '_' or '.'; empty for the system roots)")
		}
		caKey = v
	}
	return svcURL, caKey, nil
}

// hostPortOf is u's host with the scheme's port when it has none.
func hostPortOf(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "http" {
		return u.Host + ":80"
	}
	return u.Host + ":443"
}

// parsePublic reads an inbound listener's public=<Secret> field: the listener then serves
// browsers with the Secret's ordinary certificate (tls.crt, tls.key), without client
// authentication, so it takes no allow list and serves http only.
func parsePublic(ann, value string, f map[string]string) (string, error) {
	s, ok := f["public"]
	if !ok {
		return "", nil
	}
	if !dnsLabelRE.MatchString(s) {
		return "", annErr(ann, value, "public %q is not a Secret name (expected public=<the name of a kubernetes.io/tls Secret in the pod's namespace>)", s)
	}
	if f["protocol"] != "http" {
		return "", annErr(ann, value, "a public listener serves browsers over HTTPS (expected protocol=http)")
	}
	if _, ok := f["allow"]; ok {
		return "", annErr(ann, value, "a public listener does not authenticate callers (expected no allow with public=)")
	}
	return s, nil
}

// publicCertFiles are where the proxy reads a public listener's certificate and key.
func publicCertFiles(listener string) (cert, key string) {
	dir := PublicDir + "/" + listener
	return dir + "/" + corev1.TLSCertKey, dir + "/" + corev1.TLSPrivateKeyKey
}

// publicCerts returns a read-only Secret volume and its mount in the proxy for each public
// inbound listener.
func publicCerts(in []Listener) ([]corev1.Volume, []corev1.VolumeMount) {
	var vols []corev1.Volume
	var mounts []corev1.VolumeMount
	for _, s := range in {
		if s.Public == "" {
			continue
		}
		name := VolumePublicPrefix + strconv.Itoa(len(vols))
		vols = append(vols, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: s.Public,
			Items:      []corev1.KeyToPath{{Key: corev1.TLSCertKey, Path: corev1.TLSCertKey}, {Key: corev1.TLSPrivateKeyKey, Path: corev1.TLSPrivateKeyKey}},
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: PublicDir + "/" + s.Name, ReadOnly: true})
	}
	return vols, mounts
}

// setPublicVolumes makes vols the pod's only public-certificate volumes, in place where they
// already were (so injecting twice changes nothing).
func setPublicVolumes(list, vols []corev1.Volume) []corev1.Volume {
	keep := map[string]bool{}
	for _, v := range vols {
		keep[v.Name] = true
		list = upsertVolume(list, v)
	}
	out := list[:0]
	for _, v := range list {
		if strings.HasPrefix(v.Name, VolumePublicPrefix) && !keep[v.Name] {
			continue
		}
		out = append(out, v)
	}
	return out
}
