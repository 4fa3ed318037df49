package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/net/idna"
)

// MaxURLLength bounds a webhook URL, in bytes, as the API documents
// (WebhookTarget.url).
const MaxURLLength = 2048

// ErrBlocked matches every [*BlockedError] through errors.Is, for callers
// that only need to know the guard said no.
var ErrBlocked = errors.New("address blocked by the SSRF guard")

// ErrInvalidURL is wrapped by every [Guard.CheckURL] error about the form of
// the URL (scheme, user information, host, port). Its messages never repeat
// the URL, which may carry credentials in its path or query.
var ErrInvalidURL = errors.New("invalid webhook URL")

// BlockedError reports that the SSRF guard refused an address. It is
// returned by [Guard.CheckAddr], by [Guard.CheckURL] for a URL whose host is a
// literal refused address, and (wrapped in *net.OpError and *url.Error) by
// dials through [Guard.DialContext]; find it with errors.As.
//
// A BlockedError is not a property of the receiver alone: an operator can
// widen the allow-list and DNS answers change. The [Sender] therefore reports
// it as [OutcomeBlocked], a failed attempt that the retry queue may retry.
type BlockedError struct {
	// Addr is the refused address as it was presented, IPv4-mapped form and
	// zone included. It is the zero Addr when the dial was refused before an
	// address was known (an unsupported network).
	Addr netip.Addr
	// Reason names the refused range, such as "loopback" or "cloud metadata
	// service".
	Reason string
}

// Error describes the refused address and why.
func (e *BlockedError) Error() string {
	if !e.Addr.IsValid() {
		return "blocked by the SSRF guard: " + e.Reason
	}
	return fmt.Sprintf("address %s blocked by the SSRF guard: %s", e.Addr, e.Reason)
}

// Is makes errors.Is(err, ErrBlocked) true for every BlockedError.
func (e *BlockedError) Is(target error) bool { return target == ErrBlocked }

// GuardConfig configures a [Guard]. The zero value is the safe default: https
// only, and every address range below refused.
//
// Refused by default, in IPv4, IPv6, and the IPv4-mapped IPv6 form
// (::ffff:a.b.c.d) of every IPv4 range: unspecified and "this network"
// (0.0.0.0/8, ::); loopback (127.0.0.0/8, ::1); private (10.0.0.0/8,
// 172.16.0.0/12, 192.168.0.0/16); carrier-grade NAT (100.64.0.0/10);
// link-local (169.254.0.0/16, fe80::/10); cloud metadata services
// (169.254.169.254, 169.254.170.2, 100.100.100.200, fd00:ec2::254); IETF
// protocol assignments (192.0.0.0/24); documentation (192.0.2.0/24,
// 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, 3fff::/20); benchmarking
// (198.18.0.0/15, 2001:2::/48); multicast (224.0.0.0/4, ff00::/8); reserved
// and broadcast (240.0.0.0/4, 255.255.255.255); unique local (fc00::/7);
// site-local (fec0::/10); discard-only (100::/64); the deprecated or tunnelling
// forms that embed an IPv4 address or lead to one (IPv4-compatible ::/96,
// IPv4-translated ::ffff:0:0:0/96, 6to4 2002::/16 and its relay
// 192.88.99.0/24, Teredo 2001::/32, local-use NAT64 64:ff9b:1::/48); and SRv6
// SIDs (5f00::/16). An address in the well-known NAT64 prefix 64:ff9b::/96 is
// judged by the IPv4 address it embeds.
type GuardConfig struct {
	// AllowCIDRs opens address ranges the default refuses, for receivers on
	// a private network or, in tests, on loopback (127.0.0.0/8). An entry
	// overrides the deny list for every address it contains, with one
	// exception: a cloud metadata address is opened only by an entry naming
	// exactly that address (169.254.169.254/32), so allowing a wide range such
	// as 169.254.0.0/16 or 0.0.0.0/0 never hands out instance credentials by
	// accident. IPv4-mapped IPv6 prefixes (::ffff:10.0.0.0/104) are treated as
	// the IPv4 prefix they map. Default: empty.
	AllowCIDRs []netip.Prefix
	// AllowInsecure permits http URLs in addition to https. It changes only
	// the scheme rule, never the address rules. Default: false (https only).
	AllowInsecure bool
}

// WithDefaults returns a copy of c with its allow-list normalised: masked to
// the prefix length, and IPv4-mapped IPv6 prefixes converted to IPv4. The
// copy shares nothing with c.
func (c GuardConfig) WithDefaults() GuardConfig {
	out := c
	out.AllowCIDRs = make([]netip.Prefix, 0, len(c.AllowCIDRs))
	for _, p := range c.AllowCIDRs {
		if !p.IsValid() {
			out.AllowCIDRs = append(out.AllowCIDRs, p) // validate reports it
			continue
		}
		p = p.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out.AllowCIDRs = append(out.AllowCIDRs, p)
	}
	return out
}

func (c GuardConfig) validate() error {
	for i, p := range c.AllowCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("AllowCIDRs[%d]: invalid prefix", i)
		}
	}
	return nil
}

// Guard decides which addresses webhook requests may reach (SPEC §5, SSRF).
// It is immutable after [NewGuard] and safe for concurrent use.
type Guard struct {
	allow         []netip.Prefix
	allowInsecure bool
	dialer        net.Dialer
}

// NewGuard builds a Guard from cfg after applying [GuardConfig.WithDefaults].
// It fails only on an invalid allow-list prefix.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("webhook guard config: %w", err)
	}
	g := &Guard{allow: cfg.AllowCIDRs, allowInsecure: cfg.AllowInsecure}
	// No Timeout: the caller's context bounds the whole attempt. The
	// default TCP keep-alive probes detect dead idle connections.
	g.dialer = net.Dialer{ControlContext: g.control}
	return g, nil
}

// CheckAddr reports whether a connection to ip is allowed: nil, or a
// [*BlockedError] naming the refused range. It is a pure function of ip and
// the configuration. IPv4-mapped IPv6 addresses are judged as the IPv4
// address they carry, and IPv6 zones are ignored. The zero Addr is refused.
func (g *Guard) CheckAddr(ip netip.Addr) error {
	if !ip.IsValid() {
		return &BlockedError{Addr: ip, Reason: "invalid address"}
	}
	if reason := g.deny(ip.WithZone("").Unmap()); reason != "" {
		return &BlockedError{Addr: ip, Reason: reason}
	}
	return nil
}

// deny returns why ip (unmapped, without zone) is refused, or "".
func (g *Guard) deny(ip netip.Addr) string {
	if g.allowed(ip) {
		return ""
	}
	if nat64WellKnown.Contains(ip) {
		b := ip.As16()
		v4 := netip.AddrFrom4([4]byte(b[12:]))
		if r := g.deny(v4); r != "" {
			return "NAT64 form of " + v4.String() + ", " + r
		}
		return ""
	}
	for _, r := range deniedRanges {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	return ""
}

func (g *Guard) allowed(ip netip.Addr) bool {
	metadata := slices.Contains(metadataAddrs, ip)
	for _, p := range g.allow {
		if p.Contains(ip) && (!metadata || p.IsSingleIP()) {
			return true
		}
	}
	return false
}

// CheckURL checks a webhook URL without resolving DNS, so the API can call it
// when a subscription is created or updated and answer at once. It requires an
// absolute URL of at most [MaxURLLength] bytes, scheme https (or http when
// AllowInsecure is set), no user information (credentials belong in a
// header), a host, and a port in 1..65535 when one is given. A host that is a
// literal IP address is checked with [Guard.CheckAddr], "localhost" and
// "*.localhost" are judged as 127.0.0.1, and hosts written as non-standard
// numeric IPv4 ("2130706433", "0x7f.1", "127.1") are refused because
// resolvers disagree on what they mean.
//
// A host name that passes may still resolve to a refused address: the
// enforcement is [Guard.DialContext], at connect time. Errors wrap
// [ErrInvalidURL] or are a [*BlockedError], and never repeat the URL.
func (g *Guard) CheckURL(rawURL string) error {
	_, err := g.checkedURL(rawURL)
	return err
}

// checkedURL is CheckURL, returning the URL it parsed when it passes.
func (g *Guard) checkedURL(rawURL string) (*url.URL, error) {
	if len(rawURL) > MaxURLLength {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidURL, MaxURLLength)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// *url.Error repeats the whole URL; keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	if !u.IsAbs() || u.Opaque != "" {
		return nil, fmt.Errorf("%w: not an absolute URL", ErrInvalidURL)
	}
	switch u.Scheme { // url.Parse lower-cases the scheme
	case "https":
	case "http":
		if !g.allowInsecure {
			return nil, fmt.Errorf("%w: scheme must be https", ErrInvalidURL)
		}
	default:
		return nil, fmt.Errorf("%w: scheme %q is not supported, use https", ErrInvalidURL, u.Scheme)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: user information is not allowed, send credentials in a header", ErrInvalidURL)
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("%w: no host", ErrInvalidURL)
	}
	if !isASCII(host) {
		// Judge the host the way the HTTP client will dial it: net/http maps
		// a non-ASCII name through IDNA (UTS #46, idna.Lookup) first, so "127。0。0。1" (ideographic
		// full stops) or fullwidth "ｌｏｃａｌｈｏｓｔ" is the loopback
		// address by the time it is dialled.
		ascii, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return nil, fmt.Errorf("%w: host is not a valid internationalised domain name", ErrInvalidURL)
		}
		host = ascii
	}
	if len(host) > 253 {
		return nil, fmt.Errorf("%w: host longer than 253 bytes", ErrInvalidURL)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: port out of range", ErrInvalidURL)
		}
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := g.CheckAddr(ip); err != nil {
			return nil, fmt.Errorf("webhook URL host: %w", err)
		}
		return u, nil
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		// RFC 6761: these names are loopback whatever DNS says.
		if err := g.CheckAddr(netip.AddrFrom4([4]byte{127, 0, 0, 1})); err != nil {
			return nil, fmt.Errorf("webhook URL host %q: %w", name, err)
		}
		return u, nil
	}
	if endsInNumber(name) {
		return nil, fmt.Errorf("%w: host is a numeric address in a non-standard form", ErrInvalidURL)
	}
	return u, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// endsInNumber reports whether the last label of a host name is a decimal or
// 0x-hexadecimal number, which the WHATWG URL standard and many resolvers
// (inet_aton) read as an IPv4 address. No top-level domain is numeric.
func endsInNumber(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	if last == "" {
		return false
	}
	if h, ok := strings.CutPrefix(last, "0x"); ok {
		return strings.Trim(h, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

// DialContext dials like net.Dialer.DialContext, and is meant for
// http.Transport.DialContext. Before each TCP connection is made, after DNS
// resolution and for every address tried, it checks the address with
// [Guard.CheckAddr] and refuses the connection when it is blocked, so a name
// that resolves (or re-resolves, as in DNS rebinding) to a refused address
// cannot be reached. Only tcp, tcp4 and tcp6 are supported. A refusal is a
// *net.OpError wrapping a [*BlockedError]. It sets no timeout of its own:
// bound ctx.
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &BlockedError{Reason: fmt.Sprintf("network %q is not supported", network)}
	}
	return g.dialer.DialContext(ctx, network, address)
}

// control runs on the socket before connect, with the resolved address.
func (g *Guard) control(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// Fail closed: an address we cannot read is an address we cannot vet.
		return &BlockedError{Reason: "unreadable dial address"}
	}
	return g.CheckAddr(ap.Addr())
}

type deniedRange struct {
	prefix netip.Prefix
	reason string
}

const metadataReason = "cloud metadata service"

// metadataAddrs are instance-metadata endpoints: AWS, GCP, Azure, Oracle and
// DigitalOcean (169.254.169.254), AWS ECS task metadata (169.254.170.2),
// Alibaba Cloud (100.100.100.200) and AWS over IPv6 (fd00:ec2::254).
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),
	netip.MustParseAddr("169.254.170.2"),
	netip.MustParseAddr("100.100.100.200"),
	netip.MustParseAddr("fd00:ec2::254"),
}

var nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96")

// deniedRanges is read-only; the first match names the reason, so specific
// entries come before the ranges that contain them.
var deniedRanges = func() []deniedRange {
	var out []deniedRange
	for _, a := range metadataAddrs {
		out = append(out, deniedRange{netip.PrefixFrom(a, a.BitLen()), metadataReason})
	}
	for _, r := range []struct{ cidr, reason string }{
		// IPv4 (IPv4-mapped IPv6 addresses are unmapped before matching).
		{"0.0.0.0/8", "unspecified or \"this network\""},
		{"10.0.0.0/8", "private network"},
		{"100.64.0.0/10", "carrier-grade NAT"},
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link-local"},
		{"172.16.0.0/12", "private network"},
		{"192.0.0.0/24", "IETF protocol assignments"},
		{"192.0.2.0/24", "documentation"},
		{"192.88.99.0/24", "6to4 relay anycast"},
		{"192.168.0.0/16", "private network"},
		{"198.18.0.0/15", "benchmarking"},
		{"198.51.100.0/24", "documentation"},
		{"203.0.113.0/24", "documentation"},
		{"224.0.0.0/4", "multicast"},
		{"255.255.255.255/32", "broadcast"},
		{"240.0.0.0/4", "reserved"},
		// IPv6.
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"::/96", "IPv4-compatible (deprecated)"},
		{"::ffff:0:0:0/96", "IPv4-translated"},
		{"64:ff9b:1::/48", "local-use NAT64"},
		{"100::/64", "discard-only"},
		{"2001::/32", "Teredo tunnelling"},
		{"2001:2::/48", "benchmarking"},
		{"2001:db8::/32", "documentation"},
		{"2002::/16", "6to4 (deprecated)"},
		{"3fff::/20", "documentation"},
		{"5f00::/16", "SRv6 segment identifiers"},
		{"fc00::/7", "unique local address"},
		{"fe80::/10", "link-local"},
		{"fec0::/10", "site-local (deprecated)"},
		{"ff00::/8", "multicast"},
	} {
		out = append(out, deniedRange{netip.MustParsePrefix(r.cidr), r.reason})
	}
	return out
}()
