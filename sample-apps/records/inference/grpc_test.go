package inference_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/countersign/countersign/inference-server/oipgrpc/inferencepb"
	"github.com/countersign/countersign/inference-server/ortsession"
	"github.com/countersign/countersign/sample-apps/records/inference"
	"github.com/countersign/countersign/sample-apps/records/scan"
)

const repoRoot = "../../.."

// startInferenceServer builds and starts the real inference server binary with its gRPC
// endpoint on loopback, and returns its REST base URL and gRPC address.
func startInferenceServer(t *testing.T) (restURL, grpcAddr string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and starts the inference server")
	}
	lib := ortsession.LibraryPath(repoRoot)
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("ONNX Runtime library not found at %s: run `make onnxruntime` (or set ONNXRUNTIME_LIB)", lib)
	}
	bin := filepath.Join(t.TempDir(), "inference-server")
	build := exec.Command("go", "build", "-o", bin, "./inference-server/cmd/inference-server")
	build.Dir, build.Stderr = repoRoot, os.Stderr
	if err := build.Run(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
		"--model-repository", filepath.Join(repoRoot, "inference-server", "models"), "--onnxruntime-lib", lib)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	addr := regexp.MustCompile(`addr=(\S+)`)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(30 * time.Second)
	for restURL == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("inference server exited")
			}
			if m := addr.FindStringSubmatch(l); m != nil {
				if strings.Contains(l, "gRPC") {
					grpcAddr = m[1]
				} else if strings.Contains(l, "msg=serving") {
					restURL = "http://" + m[1]
				}
			}
		case <-timeout:
			t.Fatal("inference server did not start in 30s")
		}
	}
	go func() {
		for range lines {
		}
	}()
	if grpcAddr == "" {
		t.Fatal("inference server did not log its gRPC address")
	}
	return restURL, grpcAddr
}

// The gRPC client diagnoses a scan as the REST client does, on a real inference server.
func TestGRPCClientAgainstInferenceServer(t *testing.T) {
	restURL, grpcAddr := startInferenceServer(t)
	conn, err := inference.DialGRPC(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	g := &inference.GRPC{Client: pb.NewGRPCInferenceServiceClient(conn), Model: "chest-scan-classifier"}
	rest := &inference.OIP{BaseURL: restURL, Model: "chest-scan-classifier", HTTP: &http.Client{Timeout: 30 * time.Second}}
	for _, name := range []string{"normal-1", "opacity-1", "nodule-1"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, "inference-server", "models", "chest-scan-classifier", "samples", name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := scan.DecodePNG(b)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		gr, err := g.Diagnose(ctx, name, img.Tensor, scan.Size)
		if err != nil {
			cancel()
			t.Fatalf("%s: gRPC: %v", name, err)
		}
		rr, err := rest.Diagnose(ctx, name, img.Tensor, scan.Size)
		cancel()
		if err != nil {
			t.Fatalf("%s: REST: %v", name, err)
		}
		if gr.Label != strings.SplitN(name, "-", 2)[0] || gr.Model != "chest-scan-classifier" || gr.ModelVersion != "1" || len(gr.Classes) != 3 {
			t.Errorf("%s: gRPC result %+v", name, gr)
		}
		if gr.Label != rr.Label || len(gr.Classes) != len(rr.Classes) {
			t.Fatalf("%s: gRPC %+v, REST %+v", name, gr.Classes, rr.Classes)
		}
		for i := range gr.Classes {
			if gr.Classes[i] != rr.Classes[i] {
				t.Errorf("%s: class %d: gRPC %+v, REST %+v", name, i, gr.Classes[i], rr.Classes[i])
			}
		}
		// The body is the response message as on the wire (what a receipt covers): an
		// uncompressed length-prefixed ModelInferResponse.
		var m pb.ModelInferResponse
		if gr.Encoding != inference.EncodingGRPC || len(gr.Body) < 5 || gr.Body[0] != 0 || int(binary.BigEndian.Uint32(gr.Body[1:5])) != len(gr.Body)-5 {
			t.Fatalf("%s: body (%s) is not one length-prefixed gRPC message: % x", name, gr.Encoding, gr.Body[:min(len(gr.Body), 8)])
		}
		if err := proto.Unmarshal(gr.Body[5:], &m); err != nil || m.GetModelName() != "chest-scan-classifier" {
			t.Errorf("%s: body: %v, model %q", name, err, m.GetModelName())
		}
	}
	// An unknown model is an *inference.Error naming the gRPC code.
	bad := &inference.GRPC{Client: g.Client, Model: "nope"}
	_, err = bad.Diagnose(context.Background(), "x", make([]float32, scan.Size*scan.Size), scan.Size)
	var ie *inference.Error
	if !errors.As(err, &ie) || !strings.Contains(ie.Error(), "NotFound") || !strings.Contains(ie.Error(), `model "nope" not found`) {
		t.Fatalf("unknown model: %v", err)
	}
}
