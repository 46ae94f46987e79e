package images

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"sigs.k8s.io/yaml"
)

// GoBinary is a binary of this module, built for an image.
type GoBinary struct {
	Package string   // ./proxy/cmd/proxy
	Tags    []string // build tags
	// CGO: "" builds with CGO_ENABLED=0; "static" uses cgo (EGo's enclave package, imported by
	// the proxy and the injector, is cgo) and links glibc statically, with Go's own resolver and
	// user lookup (netgo, osusergo), so the binary still runs on the static base; "dynamic" links
	// glibc dynamically (the inference server loads ONNX Runtime, a C++ library, with dlopen).
	CGO  string
	Dest string // path in the image, /proxy
}

// Spec is one image.
type Spec struct {
	Name       string
	Base       bool     // the static base layer (passwd, CA bundle, tzdata, netbase, merged /usr)
	Groups     []string // groups of build/images/debian.txt, one layer with all their packages
	Binaries   []GoBinary
	Files      func(b *Builder, t *Tree) error // extra application files
	Entrypoint []string
	Env        []string
	LibPath    []string // LD_LIBRARY_PATH-like directories searched by the library check
}

const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Specs are the images the charts reference, in build order. Names are the repositories'
// last path elements (image.<x>.repository in the charts).
func Specs() []Spec {
	proxyLean := GoBinary{Package: "./proxy/cmd/proxy", Tags: []string{"noxds"}, CGO: "static", Dest: "proxy"}
	return []Spec{
		{Name: "pause", Binaries: []GoBinary{{Package: "./build/pause", Dest: "pause"}}, Entrypoint: []string{"/pause"}},
		{Name: "proxy-sim", Base: true, Binaries: []GoBinary{proxyLean}, Entrypoint: []string{"/proxy"}},
		{Name: "proxy-sim-xds", Base: true, Binaries: []GoBinary{{Package: "./proxy/cmd/proxy", CGO: "static", Dest: "proxy"}}, Entrypoint: []string{"/proxy"}},
		{
			Name:       "proxy-init",
			Base:       true,
			Groups:     []string{"iptables"},
			Binaries:   []GoBinary{proxyLean},
			Files:      iptablesAlternatives,
			Entrypoint: []string{"/proxy"},
			Env:        []string{pathEnv},
		},
		{Name: "injector", Base: true, Binaries: []GoBinary{{Package: "./injector/cmd/injector", CGO: "static", Dest: "injector"}}, Entrypoint: []string{"/injector"}},
		{Name: "attestation-service", Base: true, Binaries: []GoBinary{{Package: "./attestation/cmd/attestation-service", Dest: "attestation-service"}},
			Entrypoint: []string{"/attestation-service"}},
		{
			Name:       "records",
			Base:       true,
			Binaries:   []GoBinary{{Package: "./sample-apps/records/cmd/records", Dest: "records"}},
			Files:      portalFiles,
			Entrypoint: []string{"/records"},
		},
		{
			Name:       "inference-server",
			Base:       true,
			Groups:     []string{"cc"},
			Binaries:   []GoBinary{{Package: "./inference-server/cmd/inference-server", CGO: "dynamic", Dest: "inference-server"}},
			Files:      inferenceFiles,
			Entrypoint: []string{"/inference-server"},
			Env:        []string{"ONNXRUNTIME_LIB=/usr/lib/onnxruntime/libonnxruntime.so.1"},
		},
		{Name: "redis", Base: true, Groups: []string{"redis"}, Entrypoint: []string{"/usr/bin/redis-server"}},
		// The on-node tests' client (test/node/cmd/probe): an unmodified app in a pod. Not in
		// the charts.
		{Name: "probe", Base: true, Binaries: []GoBinary{{Package: "./test/node/cmd/probe", Dest: "probe"}}, Entrypoint: []string{"/probe"}},
	}
}

// Builder holds a build's inputs and scratch space.
type Builder struct {
	Root     string // the repository
	Cache    string // .cache/images
	Version  string // internal/version.Version of every binary: the chart's appVersion
	Lock     map[string]string
	List     PackageList
	Log      io.Writer
	scratch  string
	baseT    *Tree
	base     v1.Layer
	binaries map[string][]byte
}

// Result is one built image.
type Result struct {
	Name  string
	Image v1.Image
	Size  int64 // manifest + config + compressed layers
}

// ChartAppVersion reads appVersion from charts/countersign/Chart.yaml: the version the
// binaries report. Not `git describe`: the charts pin these images' digests in the same
// commit, so the binaries must not embed anything that changes with every commit.
func ChartAppVersion(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "charts/countersign/Chart.yaml"))
	if err != nil {
		return "", err
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil || c.AppVersion == "" {
		return "", fmt.Errorf("charts/countersign/Chart.yaml: no appVersion (%v)", err)
	}
	return c.AppVersion, nil
}

// NewBuilder reads the package list and lock.
func NewBuilder(root, cache string, log io.Writer) (*Builder, error) {
	list, err := ReadPackageList(filepath.Join(root, ListFile))
	if err != nil {
		return nil, err
	}
	lock, err := ReadLock(filepath.Join(root, LockFile))
	if err != nil {
		return nil, err
	}
	for _, p := range list.All() {
		if lock[p] == "" {
			return nil, fmt.Errorf("%s lists %s but %s has no version for it: run make pin-debian", ListFile, p, LockFile)
		}
	}
	version, err := ChartAppVersion(root)
	if err != nil {
		return nil, err
	}
	return &Builder{
		Root:     root,
		Cache:    cache,
		Version:  version,
		Lock:     lock,
		List:     list,
		Log:      log,
		binaries: map[string][]byte{},
	}, nil
}

// Build builds the named images (all when names is empty).
func (b *Builder) Build(names []string) ([]Result, error) {
	scratch, err := os.MkdirTemp("", "countersign-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	b.scratch = scratch
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []Result
	all := len(want) == 0
	for _, s := range Specs() {
		if !all && !want[s.Name] {
			continue
		}
		delete(want, s.Name)
		img, err := b.image(s)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", s.Name, err)
		}
		size, err := imageSize(img)
		if err != nil {
			return nil, err
		}
		out = append(out, Result{Name: s.Name, Image: img, Size: size})
	}
	for n := range want {
		return nil, fmt.Errorf("no image named %q", n)
	}
	return out, nil
}

func imageSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

func layerOf(t *Tree) (v1.Layer, error) {
	var buf bytes.Buffer
	if err := t.Layer(&buf); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

func (b *Builder) image(s Spec) (v1.Image, error) {
	var layers []v1.Layer
	check := NewTree() // every file of the image, for the library check
	if s.Base {
		t, err := b.baseTree()
		if err != nil {
			return nil, err
		}
		if b.base == nil {
			if b.base, err = layerOf(t); err != nil {
				return nil, err
			}
		}
		layers = append(layers, b.base)
		for _, p := range t.Paths() {
			check.entries[p] = t.entries[p]
		}
	}
	if len(s.Groups) > 0 {
		t := NewTree()
		for _, g := range s.Groups {
			pkgs, ok := b.List[g]
			if !ok {
				return nil, fmt.Errorf("%s has no group %q", ListFile, g)
			}
			if err := b.addPackages(t, pkgs); err != nil {
				return nil, err
			}
		}
		l, err := layerOf(t)
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
		if err := merge(check, t); err != nil {
			return nil, err
		}
	}
	app := NewTree()
	for _, gb := range s.Binaries {
		bin, err := b.goBuild(gb)
		if err != nil {
			return nil, err
		}
		if err := app.File(gb.Dest, 0o755, bin, gb.Package); err != nil {
			return nil, err
		}
	}
	if s.Files != nil {
		if err := s.Files(b, app); err != nil {
			return nil, err
		}
	}
	l, err := layerOf(app)
	if err != nil {
		return nil, err
	}
	layers = append(layers, l)
	if err := merge(check, app); err != nil {
		return nil, err
	}
	missing, err := check.CheckLibraries(s.LibPath)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, MissingError(s.Name, missing)
	}
	for _, sh := range []string{"bin/sh", "bin/bash", "bin/dash", "bin/busybox"} {
		if _, ok := check.Resolve(sh); ok {
			return nil, fmt.Errorf("/%s is in the image: images hold no shell", sh)
		}
	}

	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: Epoch}
	cf.Config.User = fmt.Sprintf("%d:%d", NonRoot, NonRoot)
	cf.Config.Entrypoint = s.Entrypoint
	cf.Config.WorkingDir = "/"
	cf.Config.Env = dedupEnv(append(append([]string{}, s.Env...), pathEnv))
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":   s.Name,
		"org.opencontainers.image.version": b.Version,
		"org.opencontainers.image.source":  "https://github.com/countersign/countersign",
		"dev.countersign.go-version":       runtime.Version(),
	}
	cf.History = nil
	for range layers {
		cf.History = append(cf.History, v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: "countersign build/images"})
	}
	return mutate.ConfigFile(img, cf)
}

func dedupEnv(env []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		if !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}

func merge(dst, src *Tree) error {
	for _, p := range src.Paths() {
		if err := dst.put(p, src.entries[p]); err != nil {
			return err
		}
	}
	return nil
}

func (b *Builder) addPackages(t *Tree, pkgs []string) error {
	for _, p := range pkgs {
		deb, err := FetchDeb(filepath.Join(b.Cache, "debs"), p, b.Lock[p])
		if err != nil {
			return err
		}
		if err := t.AddDeb(deb, b.scratch, nil); err != nil {
			return err
		}
	}
	return nil
}

// baseTree is the static base: Debian's base-files, netbase, tzdata and CA certificates, a
// generated CA bundle (update-ca-certificates is a maintainer script, never run here), a
// nonroot user, /tmp and the merged-/usr symlinks. No shell, no package manager.
func (b *Builder) baseTree() (*Tree, error) {
	if b.baseT != nil {
		return b.baseT, nil
	}
	t := NewTree()
	if err := b.addPackages(t, b.List["static"]); err != nil {
		return nil, err
	}
	// The CA bundle, as update-ca-certificates writes it: every certificate, sorted by path.
	var bundle bytes.Buffer
	for _, p := range t.Paths() {
		if strings.HasPrefix(p, "usr/share/ca-certificates/") && strings.HasSuffix(p, ".crt") {
			bundle.Write(t.entries[p].Data)
			if !bytes.HasSuffix(bundle.Bytes(), []byte("\n")) {
				bundle.WriteByte('\n')
			}
		}
	}
	if bundle.Len() == 0 {
		return nil, fmt.Errorf("the static group has no certificates under /usr/share/ca-certificates (is ca-certificates in %s?)", ListFile)
	}
	for _, f := range []struct {
		path string
		mode int64
		data string
	}{
		{"etc/ssl/certs/ca-certificates.crt", 0o644, bundle.String()},
		{"etc/passwd", 0o644, fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRoot, NonRoot)},
		{"etc/group", 0o644, fmt.Sprintf("root:x:0:\nnogroup:x:65534:\nnonroot:x:%d:\n", NonRoot)},
		{"etc/nsswitch.conf", 0o644, "passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"},
	} {
		if err := t.File(f.path, f.mode, []byte(f.data), "countersign"); err != nil {
			return nil, err
		}
	}
	if err := t.Dir("tmp", 0o1777, 0, 0, "countersign"); err != nil {
		return nil, err
	}
	if err := t.Dir("home/nonroot", 0o700, NonRoot, NonRoot, "countersign"); err != nil {
		return nil, err
	}
	if err := t.Dir("root", 0o700, 0, 0, "countersign"); err != nil {
		return nil, err
	}
	for link, target := range UsrMergeLinks {
		if err := t.Symlink(link, target, "countersign"); err != nil {
			return nil, err
		}
	}
	b.baseT = t
	return t, nil
}

func (b *Builder) goBuild(gb GoBinary) ([]byte, error) {
	key := gb.Package + " " + strings.Join(gb.Tags, ",") + " " + gb.CGO
	if bin, ok := b.binaries[key]; ok {
		return bin, nil
	}
	out := filepath.Join(b.scratch, fmt.Sprintf("bin-%d", len(b.binaries)))
	ldflags := "-s -w -buildid= -X github.com/countersign/countersign/internal/version.Version=" + b.Version
	tags := append([]string{}, gb.Tags...)
	cgo := "0"
	switch gb.CGO {
	case "static":
		cgo = "1"
		tags = append(tags, "netgo", "osusergo")
		ldflags += " -linkmode=external -extldflags=-static"
	case "dynamic":
		cgo = "1"
	case "":
	default:
		return nil, fmt.Errorf("%s: CGO %q: want \"\", static or dynamic", gb.Package, gb.CGO)
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	args = append(args, "-o", out, gb.Package)
	cmd := exec.Command("go", args...)
	cmd.Dir = b.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=readonly", "GOWORK=off")
	if o, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, o)
	}
	fmt.Fprintf(b.Log, "  go build %s%s\n", gb.Package, tagNote(gb.Tags))
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	b.binaries[key] = bin
	return bin, nil
}

func tagNote(tags []string) string {
	if len(tags) == 0 {
		return ""
	}
	return " (-tags " + strings.Join(tags, ",") + ")"
}

// iptablesAlternatives makes iptables and ip6tables (and their -restore and -save) the
// nf_tables backend, as `update-alternatives --set iptables /usr/sbin/iptables-nft` does on
// Debian: iptables-nft needs only NET_ADMIN (the legacy backend would also need NET_RAW).
func iptablesAlternatives(_ *Builder, t *Tree) error {
	for _, n := range []string{"iptables", "iptables-restore", "iptables-save", "ip6tables", "ip6tables-restore", "ip6tables-save"} {
		if err := t.Symlink("usr/sbin/"+n, "xtables-nft-multi", "countersign"); err != nil {
			return err
		}
	}
	return nil
}

// portalFiles: the records API serves the portal's static files (--portal-dir=/portal; the
// healthcare-demo chart has no portal image of its own).
func portalFiles(b *Builder, t *Tree) error {
	return t.AddDir(filepath.Join(b.Root, "sample-apps/portal"), "portal", "sample-apps/portal", nil)
}

var ortSHA = regexp.MustCompile(`(?m)^LIB_SHA256=([0-9a-f]{64})$`)
var ortVersion = regexp.MustCompile(`(?m)^ORT_VERSION=([0-9.]+)$`)

// inferenceFiles: libonnxruntime.so.1 (fetched and SHA-256 checked by
// scripts/fetch-onnxruntime.sh, checked again here against the value committed there), its
// licence, and the demo model repository.
func inferenceFiles(b *Builder, t *Tree) error {
	script, err := os.ReadFile(filepath.Join(b.Root, "scripts/fetch-onnxruntime.sh"))
	if err != nil {
		return err
	}
	sha, ver := ortSHA.FindSubmatch(script), ortVersion.FindSubmatch(script)
	if sha == nil || ver == nil {
		return fmt.Errorf("scripts/fetch-onnxruntime.sh: no ORT_VERSION= or LIB_SHA256= line")
	}
	dir := filepath.Join(filepath.Dir(b.Cache), "onnxruntime", string(ver[1]))
	lib, err := os.ReadFile(filepath.Join(dir, "libonnxruntime.so.1"))
	if err != nil {
		return fmt.Errorf("%w: run make onnxruntime (scripts/fetch-onnxruntime.sh)", err)
	}
	got := sha256.Sum256(lib)
	if hex.EncodeToString(got[:]) != string(sha[1]) {
		return fmt.Errorf("%s/libonnxruntime.so.1: sha256 %x, scripts/fetch-onnxruntime.sh pins %s: delete it and run make onnxruntime", dir, got, sha[1])
	}
	lic, err := os.ReadFile(filepath.Join(dir, "LICENSE"))
	if err != nil {
		return fmt.Errorf("%w: run make onnxruntime", err)
	}
	if err := t.File("usr/lib/onnxruntime/libonnxruntime.so.1", 0o644, lib, "onnxruntime "+string(ver[1])); err != nil {
		return err
	}
	if err := t.File("usr/lib/onnxruntime/LICENSE", 0o644, lic, "onnxruntime"); err != nil {
		return err
	}
	return t.AddDir(filepath.Join(b.Root, "inference-server/models"), "models", "inference-server/models", nil)
}
