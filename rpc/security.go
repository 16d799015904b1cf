package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/godwit-dev/godwit/auth"
	"github.com/godwit-dev/godwit/logging"
)

// TLS names the PEM files the server's TLS uses.
type TLS struct {
	// Cert and Key are the server's certificate (chain) and private key.
	Cert, Key string
	// ClientCA, when set, turns on mTLS: clients must present a
	// certificate that chains to a CA in this file.
	ClientCA string
}

// ServerConfig loads the files: the TLS configuration of the gRPC
// listener, which the HTTP listener shares.
func (t TLS) ServerConfig() (*tls.Config, error) {
	if t.Cert == "" || t.Key == "" {
		return nil, errors.New("api.tls: cert and key are both required")
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("api.tls: load cert %s and key %s: %w", t.Cert, t.Key, err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if t.ClientCA != "" {
		pool, err := loadPool(t.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("api.tls.client_ca: %w", err)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}

// authenticator checks bearer tokens and puts the caller's identity in the
// context of every call.
type authenticator struct {
	a   *auth.Authenticator
	log zerolog.Logger
}

// check verifies the call's token. Only the overall health Check is open
// (req is nil for streams): load balancers and orchestrators probe it
// without credentials, and it says only whether godwit serves. Health
// List, Watch and per-component Check need a token: they name sources and
// sinks, and a NotFound for a guessed name would confirm it. Reflection
// is not open either: it lists every method to anyone who asks.
func (x authenticator) check(ctx context.Context, method string, req any) (context.Context, error) {
	if !x.a.Enabled() || openHealthCheck(method, req) {
		return ctx, nil
	}
	var header string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			header = v[0]
		}
	}
	token, err := auth.BearerToken(header)
	var id auth.Identity
	if err == nil {
		id, err = x.a.Verify(token)
	}
	if err != nil {
		ev := x.log.Warn().Str("method", method).Str("reason", err.Error())
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			ev = ev.Str("peer", p.Addr.String())
		}
		ev.Msg("refused a call without a valid token")
		if errors.Is(err, auth.ErrNoToken) {
			return nil, status.Error(codes.Unauthenticated, "no bearer token: send the metadata \"authorization: Bearer TOKEN\" (godwit CLI: --token or GODWIT_TOKEN)")
		}
		return nil, status.Error(codes.Unauthenticated, "invalid token (unknown or revoked)")
	}
	return auth.WithIdentity(ctx, id), nil
}

func (x authenticator) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := x.check(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	resp, err := h(ctx, req)
	return resp, x.hideInternal(ctx, info.FullMethod, err)
}

func (x authenticator) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := x.check(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	return x.hideInternal(ctx, info.FullMethod, h(srv, ctxStream{ServerStream: ss, ctx: ctx}))
}

// hideInternal keeps godwit's insides from users: an Internal or Unknown
// error (a metadata store that cannot be reached, say) quotes driver
// messages that name hosts and ports, configuration a user may not see. A
// caller that is not an admin gets a plain "internal error"; the message
// is logged for the operator. Admins, and callers without tokens, get the
// (redacted) message.
func (x authenticator) hideInternal(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	id, ok := auth.FromContext(ctx)
	if !ok || id.IsAdmin() {
		return err
	}
	st := status.Convert(err)
	if st.Code() != codes.Internal && st.Code() != codes.Unknown {
		return err
	}
	x.log.Error().Str("method", method).Str("user", id.User).Str("error", logging.RedactText(st.Message())).
		Msg("a call failed inside godwit; the user was told only \"internal error\"")
	return status.Error(st.Code(), "internal error (logged by godwit; an admin sees the details)")
}

// ctxStream is a ServerStream with another context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

// guard turns a handler's panic into an Internal error (a hostile request
// must not take the daemon down with it) and removes passwords from every
// error message a client receives: errors may quote driver messages, and
// driver messages may quote URIs.
type guard struct{ log zerolog.Logger }

func (g guard) recovered(method string, r any) error {
	g.log.Error().Str("method", method).Str("panic", logging.RedactText(fmt.Sprint(r))).
		Str("stack", string(debug.Stack())).Msg("a call panicked; godwit keeps running")
	return status.Error(codes.Internal, "internal error (logged by godwit); godwit keeps running")
}

func redactStatus(err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	msg := logging.RedactText(st.Message())
	if msg == st.Message() {
		return st.Err()
	}
	p := st.Proto()
	p.Message = msg
	return status.FromProto(p).Err()
}

func (g guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, g.recovered(info.FullMethod, r)
		}
		err = redactStatus(err)
	}()
	return h(ctx, req)
}

func (g guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = g.recovered(info.FullMethod, r)
		}
		err = redactStatus(err)
	}()
	return h(srv, ss)
}
