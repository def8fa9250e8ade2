// Package safedial keeps outgoing requests that anyone can point somewhere
// (client metadata documents, webhooks) away from the server's own
// network: its dialer Control refuses every address that is not public,
// after name resolution, so a name that resolves to a private address (or
// starts to, DNS rebinding) is caught as well as a literal one.
package safedial

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// ErrNotPublic marks a dial that Control refused.
var ErrNotPublic = errors.New("address is not public")

// Control is a net.Dialer Control: it sees the address actually dialled
// and refuses it unless IsPublic.
func Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrNotPublic, address)
	}
	if !IsPublic(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrNotPublic, ap.Addr())
	}
	return nil
}

// nonPublicPrefixes are the ranges the netip predicates do not cover.
var nonPublicPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and broadcast
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated), with :: and ::1
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001::/32"),       // Teredo: may tunnel to any IPv4 address
	netip.MustParsePrefix("2002::/16"),       // 6to4: embeds an IPv4 address
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated
}

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// IsPublic reports whether ip may be dialled: not private, loopback,
// link-local, multicast, unspecified or otherwise reserved, also when
// written as an IPv4-mapped or NAT64 address.
func IsPublic(ip netip.Addr) bool {
	ip = ip.Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
	if nat64.Contains(ip) {
		// A NAT64 gateway forwards to the embedded IPv4 address.
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:]))
	}
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range nonPublicPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}
