package rpc

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ClientConfig says how to reach a godwit daemon. Error messages name the
// godwit CLI flags that set each field.
type ClientConfig struct {
	// Addr is host:port of the daemon (api.grpc_addr). Default DefaultAddr.
	Addr string
	// Token is sent as "authorization: Bearer TOKEN" with every call.
	Token string
	// TLS connects over TLS, verifying the server with the system's roots
	// (or CACert). CACert, Cert and ServerName imply it.
	TLS bool
	// CACert is a PEM file of the CA that signed the server's certificate.
	CACert string
	// Cert and Key are the client certificate and key for mTLS.
	Cert, Key string
	// ServerName overrides the name checked in the server's certificate
	// (default: the host of Addr).
	ServerName string
	// AllowPlaintextToken sends Token without TLS to a non-loopback
	// address. Default false: Dial refuses, since anyone on the path could
	// read the token.
	AllowPlaintextToken bool
	// MaxMessageBytes bounds messages both ways. Default
	// DefaultMaxMessageBytes.
	MaxMessageBytes int
}

// Dial returns a client connection (gRPC connects lazily, on the first
// call).
func Dial(c ClientConfig) (*grpc.ClientConn, error) {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return nil, fmt.Errorf("--addr %q: want host:port", c.Addr)
	}
	useTLS := c.TLS || c.CACert != "" || c.Cert != "" || c.ServerName != ""
	if (c.Cert == "") != (c.Key == "") {
		return nil, fmt.Errorf("--cert and --key go together (the client certificate and its key, for mTLS)")
	}
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(c.MaxMessageBytes), grpc.MaxCallSendMsgSize(c.MaxMessageBytes))}
	if useTLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
		if c.CACert != "" {
			pool, err := loadPool(c.CACert)
			if err != nil {
				return nil, fmt.Errorf("--ca-cert: %w", err)
			}
			tc.RootCAs = pool
		}
		if c.Cert != "" {
			cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
			if err != nil {
				return nil, fmt.Errorf("--cert %s / --key %s: %w", c.Cert, c.Key, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		if c.Token != "" && !isLoopback(host) && !c.AllowPlaintextToken {
			return nil, fmt.Errorf("refusing to send the token unencrypted to %s: use TLS (--ca-cert or --tls), or --insecure on a trusted network", c.Addr)
		}
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if c.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(c.Token)))
	}
	conn, err := grpc.NewClient(c.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("--addr %s: %w", c.Addr, err)
	}
	return conn, nil
}

// bearer sends a token with every call. Dial decides whether the
// transport may carry it, so it does not ask gRPC to insist on TLS (which
// would forbid the loopback default).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
