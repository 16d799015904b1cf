package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/godwit-dev/godwit/proto/godwit/event/v1"
)

// DefaultAddr is where godwit's gRPC API listens by default.
const DefaultAddr = "127.0.0.1:7701"

// Defaults of the dial options.
const (
	DefaultDialTimeout = 10 * time.Second
	DefaultCallTimeout = 30 * time.Second
	// DefaultMaxMessageBytes admits change events of MongoDB's 16 MiB
	// document limit with their pre- and post-images.
	DefaultMaxMessageBytes = 64 << 20
)

// Client is a connection to one godwit daemon. It is safe for concurrent
// use; open as many streams on it as needed.
type Client struct {
	addr string
	conn *grpc.ClientConn
	rpc  pb.EventServiceClient
	opts dialOptions
}

// DialOption configures Dial.
type DialOption func(*dialOptions) error

type dialOptions struct {
	token         string
	tls           *tls.Config
	useTLS        bool
	plainToken    bool
	dialTimeout   time.Duration
	callTimeout   time.Duration
	maxMsg        int
	grpc          []grpc.DialOption
	caFile        string
	certFile      string
	keyFile       string
	serverName    string
	tlsFilesGiven bool
}

// WithToken sends token ("authorization: Bearer TOKEN") with every call:
// godwit needs one when api.tokens are configured.
func WithToken(token string) DialOption {
	return func(o *dialOptions) error { o.token = token; return nil }
}

// WithTLS connects over TLS with cfg (nil: verify the daemon with the
// system's roots).
func WithTLS(cfg *tls.Config) DialOption {
	return func(o *dialOptions) error {
		o.useTLS = true
		if cfg != nil {
			o.tls = cfg.Clone()
		}
		return nil
	}
}

// WithTLSFiles connects over TLS, verifying the daemon with the CA
// certificate in caFile (empty: the system's roots) and, when certFile and
// keyFile are set, presenting that client certificate (mTLS). Dial reads the
// files.
func WithTLSFiles(caFile, certFile, keyFile string) DialOption {
	return func(o *dialOptions) error {
		if (certFile == "") != (keyFile == "") {
			return errors.New("WithTLSFiles: certFile and keyFile go together (the client certificate and its key, for mTLS)")
		}
		o.useTLS, o.tlsFilesGiven = true, true
		o.caFile, o.certFile, o.keyFile = caFile, certFile, keyFile
		return nil
	}
}

// WithServerName checks name in the daemon's certificate instead of the
// host of the address. It implies TLS.
func WithServerName(name string) DialOption {
	return func(o *dialOptions) error { o.useTLS, o.serverName = true, name; return nil }
}

// WithPlaintextToken allows sending the token without TLS to an address
// that is not loopback. Without it Dial refuses: anyone on the path could
// read the token. Use it on trusted networks only.
func WithPlaintextToken() DialOption {
	return func(o *dialOptions) error { o.plainToken = true; return nil }
}

// WithDialTimeout bounds how long Dial waits for the daemon to answer.
// Default DefaultDialTimeout.
func WithDialTimeout(d time.Duration) DialOption {
	return func(o *dialOptions) error {
		if d <= 0 {
			return fmt.Errorf("WithDialTimeout: %v: must be positive", d)
		}
		o.dialTimeout = d
		return nil
	}
}

// WithCallTimeout bounds each call that is not a stream: Ack,
// DeleteSubscription, and the wait for a stream to start (Subscribe and
// every reconnect). Default DefaultCallTimeout.
func WithCallTimeout(d time.Duration) DialOption {
	return func(o *dialOptions) error {
		if d <= 0 {
			return fmt.Errorf("WithCallTimeout: %v: must be positive", d)
		}
		o.callTimeout = d
		return nil
	}
}

// WithMaxMessageBytes bounds the size of one received message. Default
// DefaultMaxMessageBytes.
func WithMaxMessageBytes(n int) DialOption {
	return func(o *dialOptions) error {
		if n <= 0 {
			return fmt.Errorf("WithMaxMessageBytes: %d: must be positive", n)
		}
		o.maxMsg = n
		return nil
	}
}

// WithGRPCOptions adds options to the gRPC connection (interceptors,
// keepalive, a custom dialer). They come after the client's own.
func WithGRPCOptions(opts ...grpc.DialOption) DialOption {
	return func(o *dialOptions) error { o.grpc = append(o.grpc, opts...); return nil }
}

// Dial connects to the godwit daemon at addr (host:port, api.grpc_addr;
// empty: DefaultAddr) and checks that it answers, within ctx and the dial
// timeout. Close the client when done.
func Dial(ctx context.Context, addr string, opts ...DialOption) (*Client, error) {
	o := dialOptions{dialTimeout: DefaultDialTimeout, callTimeout: DefaultCallTimeout, maxMsg: DefaultMaxMessageBytes}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if addr == "" {
		addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial godwit: address %q: want host:port, for example %s", addr, DefaultAddr)
	}
	gopts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.maxMsg)),
		// gRPC's default waits up to 2 minutes between connection attempts;
		// a restarted daemon should be found within the streams' backoff.
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 5 * time.Second,
			Backoff: backoff.Config{BaseDelay: DefaultBackoffMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: DefaultBackoffMax}})}
	if o.useTLS {
		tc, err := o.tlsConfig()
		if err != nil {
			return nil, err
		}
		gopts = append(gopts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		if o.token != "" && !loopback(host) && !o.plainToken {
			return nil, fmt.Errorf("dial godwit at %s: refusing to send the token unencrypted to a non-loopback address: use WithTLS or WithTLSFiles, or WithPlaintextToken on a trusted network", addr)
		}
		gopts = append(gopts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if o.token != "" {
		gopts = append(gopts, grpc.WithPerRPCCredentials(bearer(o.token)))
	}
	conn, err := grpc.NewClient(addr, append(gopts, o.grpc...)...)
	if err != nil {
		return nil, fmt.Errorf("dial godwit at %s: %w", addr, err)
	}
	c := &Client{addr: addr, conn: conn, rpc: pb.NewEventServiceClient(conn), opts: o}
	// The health service needs no token and answers every client that
	// reaches the daemon: any answer, even "unknown service", proves the
	// address, TLS and the daemon are right.
	hctx, cancel := context.WithTimeout(ctx, o.dialTimeout)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(hctx, &healthpb.HealthCheckRequest{Service: pb.EventService_ServiceDesc.ServiceName})
	if code := status.Code(err); code == codes.Unavailable || code == codes.DeadlineExceeded || code == codes.Canceled {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial godwit at %s: %w", addr, ctx.Err())
		}
		msg := status.Convert(err).Message()
		return nil, fmt.Errorf("dial godwit at %s: %w: %s (%s)", addr, ErrUnavailable, msg, dialHint(msg, addr))
	}
	return c, nil
}

// dialHint says what to check after a failed dial.
func dialHint(msg, addr string) string {
	switch {
	case strings.Contains(msg, "certificate") || strings.Contains(msg, "handshake") || strings.Contains(msg, "tls:"):
		return "check TLS: WithTLSFiles needs the CA that signed godwit's certificate, and a client certificate when godwit asks for one (api.tls.client_ca)"
	case strings.Contains(msg, "server preface") || strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset"):
		return "godwit closed the connection: does it serve TLS (api.tls; use WithTLS or WithTLSFiles) or require a client certificate (mTLS)?"
	}
	return "is godwit running there, with api.grpc_addr " + addr + "?"
}

func (o *dialOptions) tlsConfig() (*tls.Config, error) {
	tc := o.tls
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if o.serverName != "" {
		tc.ServerName = o.serverName
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("WithTLSFiles: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("WithTLSFiles: CA file %s: no PEM certificate in it", o.caFile)
		}
		tc.RootCAs = pool
	}
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("WithTLSFiles: client certificate %s / key %s: %w", o.certFile, o.keyFile, err)
		}
		tc.Certificates = append(tc.Certificates, cert)
	}
	return tc, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// bearer sends the token with every call. Dial decides whether the
// transport may carry it (loopback is fine without TLS).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// Addr returns the address the client dialed.
func (c *Client) Addr() string { return c.addr }

// Close closes the connection; streams on it end with an error.
func (c *Client) Close() error { return c.conn.Close() }

// Ack moves durable subscription name's cursor to seq at once (one round
// trip) and returns the cursor and the number of events captured after it.
// Streams batch their acks with Stream.Ack instead; this is for tools.
func (c *Client) Ack(ctx context.Context, name string, seq uint64) (acked, backlog uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.callTimeout)
	defer cancel()
	res, err := c.rpc.Ack(ctx, &pb.AckRequest{DurableName: name, Sequence: seq})
	if err != nil {
		return 0, 0, c.convert("ack "+name, err)
	}
	return res.GetAcked(), res.GetBacklog(), nil
}

// DeleteSubscription deletes durable subscription name: its cursor goes,
// retention no longer waits for it, and its stream (if connected) ends
// with ErrTakenOver.
func (c *Client) DeleteSubscription(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.callTimeout)
	defer cancel()
	if _, err := c.rpc.DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{DurableName: name}); err != nil {
		return c.convert("delete subscription "+name, err)
	}
	return nil
}
