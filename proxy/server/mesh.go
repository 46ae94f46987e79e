package server

// Transparent interception (docs/transparent.md): redirected connections are handed, by
// original destination, to an attested inbound listener for the app port, to a static
// outbound route, or to the control plane's routes (proxy/mesh).

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/transparent"
)

// CodeNoRoute: a redirected connection whose original destination has no route.
const CodeNoRoute attestation.Code = "no_route"

// Listener names used in logs and metrics by the transparent listeners.
const (
	ListenerTransparentIn  = "transparent-inbound"
	ListenerTransparentOut = "transparent-outbound"
)

func listenPort(ln net.Listener) uint16 {
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		return uint16(a.Port)
	}
	return 0
}

// startTransparent binds the transparent listeners; listen records each for cleanup on
// failure.
func (s *Server) startTransparent(listen func(name, addr string) (net.Listener, error)) error {
	t := s.cfg.Transparent
	if t == nil {
		return nil
	}
	// Inbound: original destination port -> an attested inbound listener for that app port.
	inLn, err := listen(ListenerTransparentIn, t.InboundListen)
	if err != nil {
		return err
	}
	ports := map[uint16]*transparent.ChanListener{}
	for _, in := range t.Inbound {
		cl := transparent.NewChanListener(inLn.Addr())
		ports[uint16(in.Port)] = cl
		err := s.inbound(config.Inbound{
			Name: in.Name, Protocol: in.Protocol, Allow: in.Allow,
			ForwardTo: net.JoinHostPort("127.0.0.1", strconv.Itoa(in.Port)),
		}, cl, uint16(in.Port))
		if err != nil {
			return fmt.Errorf("transparent inbound %s: %w", in.Name, err)
		}
	}
	s.addTask(ListenerTransparentIn, func(ctx context.Context) error {
		return transparent.Serve(ctx, inLn, func(c net.Conn, dst netip.AddrPort) {
			if cl := ports[dst.Port()]; cl != nil {
				cl.Push(c)
				return
			}
			s.refuseConn(c, ListenerTransparentIn, dst)
		}, s.log)
	})
	// Outbound: static routes first, then the control plane's listeners.
	outLn, err := listen(ListenerTransparentOut, t.OutboundListen)
	if err != nil {
		return err
	}
	static := map[netip.AddrPort]*transparent.ChanListener{}
	for _, r := range t.Outbound {
		cl := transparent.NewChanListener(outLn.Addr())
		static[r.Destination] = cl
		s.outbound(config.Outbound{
			Name:             r.Name,
			Protocol:         r.Protocol,
			Upstream:         r.Destination.String(),
			UpstreamIdentity: r.UpstreamIdentity,
			Authority:        r.Authority,
		}, cl)
	}
	var dynHTTP *transparent.ChanListener
	if s.cp != nil {
		dynHTTP = transparent.NewChanListener(outLn.Addr())
		s.serveProxy(ListenerTransparentOut, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			dst, _ := r.Context().Value(dstKey{}).(netip.AddrPort)
			s.cp.ServeRoute(w, r, ListenerTransparentOut, dst)
		}), dynHTTP, nil, func(ctx context.Context, c net.Conn) context.Context {
			if dc, ok := c.(*dstConn); ok {
				return context.WithValue(ctx, dstKey{}, dc.dst)
			}
			return ctx
		})
	}
	s.addTask(ListenerTransparentOut, func(ctx context.Context) error {
		return transparent.Serve(ctx, outLn, func(c net.Conn, dst netip.AddrPort) {
			if cl := static[dst]; cl != nil {
				cl.Push(c)
				return
			}
			if s.cp != nil {
				if ok, isHTTP := s.cp.Route(dst); ok {
					if isHTTP {
						dynHTTP.Push(&dstConn{Conn: c, dst: dst})
						return
					}
					s.cp.PipeRoute(ctx, c, ListenerTransparentOut, dst)
					return
				}
			}
			s.refuseConn(c, ListenerTransparentOut, dst)
		}, s.log)
	})
	return nil
}

type dstKey struct{}

// dstConn carries a redirected connection's original destination to the HTTP server.
type dstConn struct {
	net.Conn
	dst netip.AddrPort
}

func (s *Server) refuseConn(c net.Conn, listener string, dst netip.AddrPort) {
	s.log.Warn("connection refused: no route for its original destination", "listener", listener, "destination", dst.String(), "remote", c.RemoteAddr().String())
	s.Metrics.Reject(listener, CodeNoRoute)
	c.Close()
}
