package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/countersign/countersign/inference-server/demomodel"
	"github.com/countersign/countersign/inference-server/internal/testort"
	"github.com/countersign/countersign/inference-server/oip"
	pb "github.com/countersign/countersign/inference-server/oipgrpc/inferencepb"
)

// BenchmarkGRPCVsREST compares, in one run and interleaved (runInterleaved), the gRPC ModelInfer
// call with raw_input_contents against the REST binary tensor path on the same server process,
// model and scan, both asking for every output as raw bytes. The baseline pair are the cheap
// load clients, whose cost stays off the figures on a machine client and server share: the
// wrk-like raw HTTP/1.1 connection of BenchmarkServerVsDirect (loadConn) against an h2load-like
// raw h2c connection (h2Conn). For reference, the pair of Go's clients: net/http against
// grpc-go (as the records API uses it), one connection per client in every row. It runs a fixed number of requests per row (b.N is not used), prints a table and the
// throughput ratios gRPC ÷ REST (target ≥ 1.0×), and reports them as metrics.
func BenchmarkGRPCVsREST(b *testing.B) {
	lib := testort.Lib(b)
	x := samples(b)["opacity-1"]
	type setup struct {
		label, repo, name string
		side              int
		scan              []float32
		n1, n8            int
	}
	setups := []setup{
		{"demo", testort.ModelRepository(), modelName, demomodel.Size, x, 3000, 600},
		{"224", benchModelRepository(b), demomodel.BenchName, demomodel.BenchSize, demomodel.BenchScan(x), 300, 100},
	}
	var groups [][]*benchRow
	for _, s := range setups {
		in := start(b, "--onnxruntime-lib", lib, "--model-repository", s.repo, "--intra-op-threads", "1", "--grpc-listen", "127.0.0.1:0")
		scan := oip.Tensor{Name: "scan", Datatype: oip.FP32, Shape: []int64{1, 1, int64(s.side), int64(s.side)}, Data: s.scan}
		raw := oip.AppendBinary(nil, &scan)
		hdr := fmt.Sprintf(`{"id":"bench","parameters":{"binary_data_output":true},"inputs":[{"name":"scan","datatype":"FP32","shape":[1,1,%d,%d],"parameters":{"binary_data_size":%d}}]}`, s.side, s.side, len(raw))
		body := append([]byte(hdr), raw...)
		url := in.url + "/v2/models/" + s.name + "/infer"
		rest := loadClients(b, url, body, "Content-Type", "application/octet-stream", oip.HeaderContentLength, strconv.Itoa(len(hdr)))
		goREST := func() func() error {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}, Timeout: 30 * time.Second}
			return func() error {
				req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
				if err != nil {
					return err
				}
				req.Header.Set(oip.HeaderContentLength, strconv.Itoa(len(hdr)))
				resp, err := c.Do(req)
				if err != nil {
					return err
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return err
			}
		}
		req := &pb.ModelInferRequest{ModelName: s.name, Id: "bench",
			Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "scan", Datatype: oip.FP32, Shape: scan.Shape}},
			RawInputContents: [][]byte{raw}}
		var mu sync.Mutex
		var conns []*grpc.ClientConn
		b.Cleanup(func() {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
		grpcClient := func() func() error {
			conn, err := grpc.NewClient(in.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return func() error { return err }
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			c := pb.NewGRPCInferenceServiceClient(conn)
			return func() error {
				r, err := c.ModelInfer(context.Background(), req)
				if err == nil && len(r.GetRawOutputContents()) != 2 {
					err = fmt.Errorf("%d raw outputs", len(r.GetRawOutputContents()))
				}
				return err
			}
		}
		for _, conc := range []int{1, 8} {
			n := s.n1
			if conc == 8 {
				n = s.n8
			}
			groups = append(groups, []*benchRow{
				{name: s.label + ": REST binary (raw HTTP/1.1 client)", conc: conc, n: n, newClient: rest},
				{name: s.label + ": gRPC raw_input_contents (raw h2c client)", conc: conc, n: n, newClient: h2Clients(b, in.grpc, "/inference.GRPCInferenceService/ModelInfer", req)},
				{name: s.label + ": gRPC raw_input_contents (grpc-go client)", conc: conc, n: n / 3, newClient: grpcClient},
				{name: s.label + ": REST binary (Go net/http client)", conc: conc, n: n / 3, newClient: goREST},
			})
		}
	}
	load0 := loadavg()
	stats := make([]groupStats, len(groups))
	for i, g := range groups {
		var err error
		if stats[i], err = runInterleaved(g); err != nil {
			b.Fatal(err)
		}
	}
	w := os.Stdout
	fmt.Fprintf(w, "\ninference-server: gRPC ModelInfer (raw contents) vs REST binary tensors, same server process; GOMAXPROCS %d; load average %s before, %s after\n",
		runtimeProcs(), load0, loadavg())
	fmt.Fprintf(w, "%-48s %5s %8s %9s %9s %9s\n", "path", "conc", "requests", "p50 µs", "p99 µs", "req/s")
	for i, g := range groups {
		for _, r := range g {
			fmt.Fprintf(w, "%-48s %5d %8d %9.1f %9.1f %9.0f\n", r.name, r.conc, len(r.lat), r.p(0.5), r.p(0.99), r.throughput)
		}
		fmt.Fprintf(w, "  (rows above measured interleaved; %s)\n", stats[i])
	}
	fmt.Fprintf(w, "\nthroughput gRPC ÷ REST binary (target ≥ 1.0×):\n")
	for _, g := range groups {
		rest, grpcRow, grpcGo, goRow := g[0], g[1], g[2], g[3]
		ratio := grpcRow.throughput / rest.throughput
		label := strings.SplitN(rest.name, ":", 2)[0]
		fmt.Fprintf(w, "  %-4s conc %d: raw clients %.2f× (p50 %.1f against %.1f µs); Go's clients (grpc-go ÷ net/http) %.2f× (p50 %.1f against %.1f µs)\n",
			label, rest.conc, ratio, grpcRow.p(0.5), rest.p(0.5), grpcGo.throughput/goRow.throughput, grpcGo.p(0.5), goRow.p(0.5))
		b.ReportMetric(ratio, fmt.Sprintf("%s-c%d-grpc/rest", label, rest.conc))
	}
	fmt.Fprintln(w)
}
