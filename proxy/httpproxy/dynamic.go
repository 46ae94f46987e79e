package httpproxy

// CloseIdleConnections closes this handler's idle upstream connections. The xDS wiring calls
// it on a handler whose endpoint left the cluster; requests in flight finish on their own
// connections.
func (o *Outbound) CloseIdleConnections() {
	if g := o.gen.Load(); g != nil {
		g.tr.CloseIdleConnections()
	}
}
