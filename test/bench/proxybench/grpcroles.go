package proxybench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// The gRPC part's helper roles (issue 16), run by RunRole like "app" and "goproxy".
var grpcRoles = map[string]func(context.Context, *flag.FlagSet) error{
	"grpcapp":   runGRPCApp,
	"goh2proxy": runGoH2Proxy,
}

// grpcService is the gRPC app: grpc-go's interop TestService, whose UnaryCall answers every
// call with the 1 KiB payload.
type grpcService struct {
	testpb.UnimplementedTestServiceServer
}

func (grpcService) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: payload}}, nil
}

// runGRPCApp serves the TestService over h2c on -listen until ctx ends.
func runGRPCApp(ctx context.Context, fs *flag.FlagSet) error {
	addr := fs.String("listen", "", "listen address (h2c)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	ln, err := listen(*addr)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, grpcService{})
	go func() {
		<-ctx.Done()
		t := time.AfterFunc(5*time.Second, s.Stop)
		s.GracefulStop()
		t.Stop()
	}()
	return s.Serve(ln)
}

// runGoH2Proxy is one proxy of the plain Go HTTP/2 mTLS pair, the gRPC part's like-for-like
// peer: httputil.ReverseProxy with Rewrite and FlushInterval -1 (gRPC streams unbuffered). The
// front one (A) serves h2c with prior knowledge and calls its upstream over TLS 1.3, ALPN h2,
// with a client certificate; the back one (B) terminates TLS 1.3 (h2 only), requires a client
// certificate signed by the bench's CA, and calls the app over h2c. One ECDSA P-256
// certificate, as for the HTTP/1.1 pair.
func runGoH2Proxy(ctx context.Context, fs *flag.FlagSet) error {
	addr := fs.String("listen", "", "listen address")
	to := fs.String("to", "", "upstream URL: http:// (h2c) or https:// (h2 over TLS 1.3 with a client certificate)")
	cert := fs.String("cert", "", "certificate file: served (with -tls) and presented to an https upstream")
	key := fs.String("key", "", "key file")
	ca := fs.String("ca", "", "CA file: required of clients with -tls, and of an https upstream")
	serveTLS := fs.Bool("tls", false, "terminate TLS 1.3 (h2) and require a client certificate; otherwise serve h2c")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	up, err := url.Parse(*to)
	if err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(*ca)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("%s: no certificate", *ca)
	}
	var h2, h2c http.Protocols
	h2.SetHTTP2(true)
	h2c.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     2 * time.Minute,
		Protocols:           &h2c,
	}
	if up.Scheme == "https" {
		tr.Protocols = &h2
		tr.TLSClientConfig = &tls.Config{
			MinVersion:       tls.VersionTLS13,
			RootCAs:          pool,
			Certificates:     []tls.Certificate{pair},
			ServerName:       up.Hostname(),
			CurvePreferences: []tls.CurveID{tls.CurveP256},
		}
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			pr.Out.Host = pr.In.Host
		},
		Transport:     tr,
		FlushInterval: -1,
	}
	ln, err := listen(*addr)
	if err != nil {
		return err
	}
	s := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, Protocols: &h2c}
	if *serveTLS {
		s.Protocols = &h2
		s.TLSConfig = &tls.Config{
			MinVersion:       tls.VersionTLS13,
			Certificates:     []tls.Certificate{pair},
			ClientAuth:       tls.RequireAndVerifyClientCert,
			ClientCAs:        pool,
			NextProtos:       []string{"h2"},
			CurvePreferences: []tls.CurveID{tls.CurveP256},
		}
	}
	return serveAll(ctx, map[*http.Server]net.Listener{s: ln})
}
