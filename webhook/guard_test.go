package webhook_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/outflow-dev/outflow/webhook"
)

func mustGuard(t testing.TB, cfg webhook.GuardConfig) *webhook.Guard {
	t.Helper()
	g, err := webhook.NewGuard(cfg)
	if err != nil {
		t.Fatalf("NewGuard: %v", err)
	}
	return g
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// TestCheckAddrDefault checks the default deny list as a pure function: no
// test in this package connects to a non-loopback address.
func TestCheckAddrDefault(t *testing.T) {
	t.Parallel()
	g := mustGuard(t, webhook.GuardConfig{})
	tests := []struct {
		addr   string
		reason string // "" means allowed
	}{
		// IPv4, blocked.
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "this network"},
		{"10.0.0.1", "private"},
		{"10.255.255.255", "private"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"100.127.255.255", "carrier-grade NAT"},
		{"100.100.100.200", "cloud metadata"},
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"169.254.0.1", "link-local"},
		{"169.254.169.254", "cloud metadata"},
		{"169.254.170.2", "cloud metadata"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.0.0.170", "IETF protocol"},
		{"192.0.2.1", "documentation"},
		{"192.88.99.1", "6to4"},
		{"192.168.1.1", "private"},
		{"198.18.0.1", "benchmarking"},
		{"198.19.255.255", "benchmarking"},
		{"198.51.100.7", "documentation"},
		{"203.0.113.9", "documentation"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"240.0.0.1", "reserved"},
		{"255.255.255.255", "broadcast"},
		// IPv4, allowed: public, including the neighbours of blocked ranges.
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"9.255.255.255", ""},
		{"11.0.0.0", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"126.255.255.255", ""},
		{"128.0.0.0", ""},
		{"169.253.255.255", ""},
		{"169.255.0.0", ""},
		{"172.15.255.255", ""},
		{"172.32.0.0", ""},
		{"192.167.255.255", ""},
		{"192.169.0.0", ""},
		{"198.17.255.255", ""},
		{"198.20.0.0", ""},
		{"223.255.255.255", ""},
		// IPv6, blocked.
		{"::", "unspecified"},
		{"::1", "loopback"},
		{"::127.0.0.1", "IPv4-compatible"},
		{"::ffff:0:10.0.0.1", "IPv4-translated"},
		{"64:ff9b:1::1", "local-use NAT64"},
		{"100::1", "discard-only"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"},
		{"2001:2::1", "benchmarking"},
		{"2001:db8::1", "documentation"},
		{"2002:7f00:1::1", "6to4"},
		{"3fff::1", "documentation"},
		{"5f00::1", "SRv6"},
		{"fc00::1", "unique local"},
		{"fd12:3456:789a::1", "unique local"},
		{"fd00:ec2::254", "cloud metadata"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"febf:ffff::1", "link-local"},
		{"fec0::1", "site-local"},
		{"ff02::1", "multicast"},
		{"ff05::1:3", "multicast"},
		// IPv4-mapped IPv6 forms are judged as IPv4.
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:10.1.2.3", "private"},
		{"::ffff:172.16.5.4", "private"},
		{"::ffff:192.168.0.1", "private"},
		{"::ffff:100.64.1.1", "carrier-grade NAT"},
		{"::ffff:169.254.1.1", "link-local"},
		{"::ffff:169.254.169.254", "cloud metadata"},
		{"::ffff:0.0.0.0", "unspecified"},
		{"::ffff:224.0.0.1", "multicast"},
		{"::ffff:255.255.255.255", "broadcast"},
		{"::ffff:198.18.0.1", "benchmarking"},
		{"::ffff:8.8.8.8", ""},
		// The well-known NAT64 prefix is judged by the IPv4 it embeds.
		{"64:ff9b::7f00:1", "NAT64 form of 127.0.0.1, loopback"},
		{"64:ff9b::a9fe:a9fe", "cloud metadata"},
		{"64:ff9b::a00:1", "private"},
		{"64:ff9b::808:808", ""},
		// IPv6, allowed.
		{"2606:4700::1", ""},
		{"2606:4700:4700::1111", ""},
		{"2001:4860:4860::8888", ""},
		{"2a00:1450:4001:82b::200e", ""},
		{"2001:1::1", ""},
		{"fbff:ffff::1", ""},
		{"fe00::1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			t.Parallel()
			ip := netip.MustParseAddr(tt.addr)
			err := g.CheckAddr(ip)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("CheckAddr(%s) = %v, want allowed", ip, err)
				}
				return
			}
			var be *webhook.BlockedError
			if !errors.As(err, &be) {
				t.Fatalf("CheckAddr(%s) = %v, want *BlockedError", ip, err)
			}
			if be.Addr != ip || !strings.Contains(be.Reason, tt.reason) {
				t.Fatalf("CheckAddr(%s) = {%s, %q}, want reason containing %q", ip, be.Addr, be.Reason, tt.reason)
			}
			if !errors.Is(err, webhook.ErrBlocked) {
				t.Fatal("BlockedError does not match ErrBlocked")
			}
		})
	}

	t.Run("zero Addr", func(t *testing.T) {
		t.Parallel()
		if err := g.CheckAddr(netip.Addr{}); !errors.Is(err, webhook.ErrBlocked) {
			t.Fatalf("CheckAddr(zero) = %v, want blocked", err)
		}
	})
}

func TestCheckAddrAllowList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allow   []string
		addr    string
		allowed bool
	}{
		{"loopback opened", []string{"127.0.0.0/8"}, "127.0.0.1", true},
		{"mapped loopback opened by IPv4 entry", []string{"127.0.0.0/8"}, "::ffff:127.0.0.1", true},
		{"IPv6 loopback stays closed", []string{"127.0.0.0/8"}, "::1", false},
		{"other private range stays closed", []string{"127.0.0.0/8"}, "10.0.0.1", false},
		{"NAT64 of opened range", []string{"127.0.0.0/8"}, "64:ff9b::7f00:1", true},
		{"mapped prefix is normalised", []string{"::ffff:10.0.0.0/104"}, "10.1.2.3", true},
		{"unmasked prefix is normalised", []string{"10.1.2.3/8"}, "10.200.0.1", true},
		{"private /24", []string{"192.168.10.0/24"}, "192.168.10.5", true},
		{"outside the /24", []string{"192.168.10.0/24"}, "192.168.11.5", false},
		{"IPv6 ULA", []string{"fd00::/8"}, "fd00::1", true},
		{"link-local range does not open metadata", []string{"169.254.0.0/16"}, "169.254.169.254", false},
		{"link-local range opens link-local", []string{"169.254.0.0/16"}, "169.254.1.1", true},
		{"everything does not open metadata", []string{"0.0.0.0/0"}, "169.254.169.254", false},
		{"everything does not open Alibaba metadata", []string{"0.0.0.0/0"}, "100.100.100.200", false},
		{"everything opens private", []string{"0.0.0.0/0"}, "10.0.0.1", true},
		{"ULA range does not open AWS IPv6 metadata", []string{"fc00::/7"}, "fd00:ec2::254", false},
		{"exact entry opens metadata", []string{"169.254.169.254/32"}, "169.254.169.254", true},
		{"exact entry opens mapped metadata", []string{"169.254.169.254/32"}, "::ffff:169.254.169.254", true},
		{"exact IPv6 entry opens metadata", []string{"fd00:ec2::254/128"}, "fd00:ec2::254", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := mustGuard(t, webhook.GuardConfig{AllowCIDRs: prefixes(tt.allow...)})
			err := g.CheckAddr(netip.MustParseAddr(tt.addr))
			if tt.allowed != (err == nil) {
				t.Fatalf("CheckAddr(%s) with allow %v = %v, want allowed=%v", tt.addr, tt.allow, err, tt.allowed)
			}
		})
	}

	t.Run("invalid prefix", func(t *testing.T) {
		t.Parallel()
		if _, err := webhook.NewGuard(webhook.GuardConfig{AllowCIDRs: []netip.Prefix{{}}}); err == nil {
			t.Fatal("NewGuard accepted an invalid prefix")
		}
	})
	t.Run("config is copied", func(t *testing.T) {
		t.Parallel()
		cfg := webhook.GuardConfig{AllowCIDRs: prefixes("127.0.0.0/8")}
		g := mustGuard(t, cfg)
		cfg.AllowCIDRs[0] = netip.MustParsePrefix("10.0.0.0/8")
		if g.CheckAddr(netip.MustParseAddr("127.0.0.1")) != nil {
			t.Fatal("changing the config after NewGuard changed the Guard")
		}
	})
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	const (
		invalid = "invalid"
		blocked = "blocked"
	)
	tests := []struct {
		name     string
		url      string
		insecure bool
		allow    []string
		want     string // "", invalid or blocked
	}{
		{"https", "https://example.com/hooks/cart", false, nil, ""},
		{"port and query", "https://example.com:8443/h?x=1", false, nil, ""},
		{"upper-case scheme and host", "HTTPS://Example.COM/", false, nil, ""},
		{"public IPv4 literal", "https://8.8.8.8/", false, nil, ""},
		{"public IPv6 literal", "https://[2606:4700::1]:443/", false, nil, ""},
		{"name is not resolved", "https://metadata.google.internal/", false, nil, ""},
		{"numeric label inside", "https://1.example.com/", false, nil, ""},
		{"hex-looking TLD is a name", "https://example.0xzz/", false, nil, ""},
		{"http refused", "http://example.com/", false, nil, invalid},
		{"http with AllowInsecure", "http://example.com/", true, nil, ""},
		{"other scheme", "ftp://example.com/", true, nil, invalid},
		{"javascript", "javascript:alert(1)", true, nil, invalid},
		{"userinfo", "https://user:pass@example.com/", false, nil, invalid},
		{"user only", "https://user@example.com/", false, nil, invalid},
		{"no host", "https:///path", false, nil, invalid},
		{"port only", "https://:443/", false, nil, invalid},
		{"relative", "example.com/hook", false, nil, invalid},
		{"opaque", "https:example.com", false, nil, invalid},
		{"empty", "", false, nil, invalid},
		{"port zero", "https://example.com:0/", false, nil, invalid},
		{"port too large", "https://example.com:70000/", false, nil, invalid},
		{"space in host", "https://exa mple.com/", false, nil, invalid},
		{"control character", "https://example.com/\x00", false, nil, invalid},
		{"too long", "https://example.com/" + strings.Repeat("a", webhook.MaxURLLength), false, nil, invalid},
		{"host too long", "https://" + strings.Repeat("a.", 127) + "com/", false, nil, invalid},
		{"decimal IPv4", "https://2130706433/", false, nil, invalid},
		{"hex IPv4", "https://0x7f.1/", false, nil, invalid},
		{"short IPv4", "https://127.1/", false, nil, invalid},
		{"octal-looking IPv4", "https://0177.0.0.1/", false, nil, invalid},
		{"numeric with trailing dot", "https://1.2.3./", false, nil, invalid},
		{"loopback literal", "https://127.0.0.1:8443/", false, nil, blocked},
		{"loopback literal allow-listed", "https://127.0.0.1:8443/", false, []string{"127.0.0.0/8"}, ""},
		{"IPv6 loopback literal", "https://[::1]/", false, nil, blocked},
		{"mapped metadata literal", "https://[::ffff:169.254.169.254]/", false, nil, blocked},
		{"metadata literal", "http://169.254.169.254/latest/meta-data/", true, nil, blocked},
		{"zoned link-local literal", "https://[fe80::1%25eth0]/", false, nil, blocked},
		{"private literal", "https://10.0.0.5/", false, nil, blocked},
		{"localhost", "https://localhost/", false, nil, blocked},
		{"localhost upper-case with dot", "https://LOCALHOST./", false, nil, blocked},
		{"sub.localhost", "https://api.localhost/", false, nil, blocked},
		{"localhost allow-listed", "https://localhost:9000/", false, []string{"127.0.0.0/8"}, ""},
		// IDNA (UTS #46) forms, judged as net/http will dial them.
		{"ideographic full stops to loopback", "https://127\u30020\u30020\u30021/", false, nil, blocked},
		{"fullwidth full stops to metadata", "https://169\uff0e254\uff0e169\uff0e254/", false, nil, blocked},
		{"halfwidth ideographic full stops to private", "https://10\uff610\uff610\uff615/", false, nil, blocked},
		{"fullwidth digits to loopback", "https://\uff11\uff12\uff17.0.0.1/", false, nil, blocked},
		{"fullwidth localhost", "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", false, nil, blocked},
		{"ideographic full stop before localhost", "https://api\u3002localhost/", false, nil, blocked},
		{"ideographic decimal IPv4", "https://2130706433\u3002/", false, nil, invalid},
		{"IDNA to a short IPv4", "https://127\u30021/", false, nil, invalid},
		{"bidi override in a name", "https://exa\u202emple.com/", false, nil, invalid},
		{"unicode name", "https://b\u00fccher.example/", false, nil, ""},
		{"ideographic full stops in a name", "https://example\u3002com/", false, nil, ""},
		{"unicode name to an allow-listed loopback", "https://127\u30020\u30020\u30021:9000/", false, []string{"127.0.0.0/8"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := mustGuard(t, webhook.GuardConfig{AllowInsecure: tt.insecure, AllowCIDRs: prefixes(tt.allow...)})
			err := g.CheckURL(tt.url)
			switch tt.want {
			case "":
				if err != nil {
					t.Fatalf("CheckURL(%q) = %v, want nil", tt.url, err)
				}
			case invalid:
				if !errors.Is(err, webhook.ErrInvalidURL) {
					t.Fatalf("CheckURL(%q) = %v, want ErrInvalidURL", tt.url, err)
				}
			case blocked:
				var be *webhook.BlockedError
				if !errors.As(err, &be) {
					t.Fatalf("CheckURL(%q) = %v, want *BlockedError", tt.url, err)
				}
			}
		})
	}

	t.Run("errors do not repeat credentials", func(t *testing.T) {
		t.Parallel()
		g := mustGuard(t, webhook.GuardConfig{})
		for _, u := range []string{
			"https://user:s3cr3t-passw0rd@example.com/",
			"http://example.com/hook?token=s3cr3t-passw0rd",
			"https://exa mple.com/hook?token=s3cr3t-passw0rd",
			"https://example.com:99999/s3cr3t-passw0rd",
		} {
			err := g.CheckURL(u)
			if err == nil || strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("CheckURL(%q) = %v, want an error without the credential", u, err)
			}
		}
	})
}

// listen starts a loopback TCP listener that accepts and closes connections
// until the test ends.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln
}

func TestDialContext(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	closed := mustGuard(t, webhook.GuardConfig{})
	open := mustGuard(t, webhook.GuardConfig{AllowCIDRs: prefixes("127.0.0.0/8", "::1/128")})

	tests := []struct {
		name    string
		guard   *webhook.Guard
		network string
		addr    string
		reason  string // "" means the dial succeeds
	}{
		{"loopback IP refused", closed, "tcp", ln.Addr().String(), "loopback"},
		{"loopback IP refused on tcp4", closed, "tcp4", ln.Addr().String(), "loopback"},
		// The name passes no URL check here: the refusal happens after DNS
		// (/etc/hosts) resolved it, on the address actually dialled.
		{"name resolving to loopback refused", closed, "tcp", net.JoinHostPort("localhost", port), "loopback"},
		{"loopback allowed when allow-listed", open, "tcp", ln.Addr().String(), ""},
		{"udp refused", open, "udp", ln.Addr().String(), "network"},
		{"unix refused", open, "unix", "/tmp/x.sock", "network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn, err := tt.guard.DialContext(t.Context(), tt.network, tt.addr)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("DialContext: %v", err)
				}
				_ = conn.Close()
				return
			}
			if conn != nil {
				_ = conn.Close()
			}
			var be *webhook.BlockedError
			if !errors.As(err, &be) || !strings.Contains(be.Reason, tt.reason) {
				t.Fatalf("DialContext = %v, want *BlockedError with reason %q", err, tt.reason)
			}
		})
	}

	t.Run("cancelled context", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := open.DialContext(ctx, "tcp", ln.Addr().String()); !errors.Is(err, context.Canceled) {
			t.Fatalf("DialContext with cancelled context = %v", err)
		}
	})
}
