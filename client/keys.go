package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"time"
)

// An agent can hold a key instead of a secret: it registers the public key
// (Registration.JWKS, from PublicJWKS) and authenticates with assertions it
// signs (Credentials.Key), RFC 7523 private_key_jwt. The private key never
// leaves the agent.

// ClientAssertionType is the client_assertion_type of private_key_jwt.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLifetime is how long an assertion is valid (the issuer takes at
// most 5 minutes).
const assertionLifetime = time.Minute

// PublicJWKS is the JWK Set holding key's public half, for
// Registration.JWKS: an ECDSA P-256 (ES256), Ed25519 (EdDSA) or RSA key of
// 2048 bits or more (RS256), with kid as its key id.
func PublicJWKS(key crypto.Signer, kid string) (json.RawMessage, error) {
	members, alg, err := jwkMembers(key.Public())
	if err != nil {
		return nil, err
	}
	jwk := map[string]string{"alg": alg, "use": "sig"}
	maps.Copy(jwk, members)
	if kid != "" {
		jwk["kid"] = kid
	}
	return json.Marshal(map[string]any{"keys": []any{jwk}})
}

// JWKThumbprint is the RFC 7638 thumbprint of a public key (SHA-256,
// base64url): what an issuer writes as cnf.jkt in a DPoP-bound token and
// what dpop_jkt at the authorization endpoint names.
func JWKThumbprint(pub crypto.PublicKey) (string, error) {
	members, _, err := jwkMembers(pub)
	if err != nil {
		return "", err
	}
	return thumbprint(members), nil
}

// thumbprint hashes the required members of a JWK: json.Marshal writes a
// map's keys sorted and without white space, the form RFC 7638 §3 hashes.
func thumbprint(members map[string]string) string {
	b, _ := json.Marshal(members)
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// jwkMembers are the members of pub's JWK that RFC 7638 names (kty and
// the key's own: crv, x, y or n, e), and the algorithm the key signs
// assertions with.
func jwkMembers(pub crypto.PublicKey) (map[string]string, string, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, "", errors.New("client: an ECDSA key must be P-256")
		}
		raw, err := pub.ECDH()
		if err != nil {
			return nil, "", err
		}
		b := raw.Bytes()
		return map[string]string{"kty": "EC", "crv": "P-256", "x": b64(b[1:33]), "y": b64(b[33:])}, "ES256", nil
	case ed25519.PublicKey:
		return map[string]string{"kty": "OKP", "crv": "Ed25519", "x": b64(pub)}, "EdDSA", nil
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return nil, "", errors.New("client: an RSA key must have at least 2048 bits")
		}
		return map[string]string{"kty": "RSA", "n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())}, "RS256", nil
	}
	return nil, "", fmt.Errorf("client: unsupported key type %T", pub)
}

// assertion signs a client assertion of id for the endpoint at aud.
func assertion(key crypto.Signer, kid, id, aud string, now time.Time) (string, error) {
	_, alg, err := jwkMembers(key.Public())
	if err != nil {
		return "", err
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	header := map[string]any{"alg": alg, "typ": "JWT"}
	if kid != "" {
		header["kid"] = kid
	}
	claims := map[string]any{"iss": id, "sub": id, "aud": aud, "iat": now.Unix(),
		"exp": now.Add(assertionLifetime).Unix(), "jti": base64.RawURLEncoding.EncodeToString(jti)}
	return signJWT(key, alg, header, claims)
}

// signJWT is a compact JWS of claims (RFC 7515), signed with alg.
func signJWT(key crypto.Signer, alg string, header, claims map[string]any) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64(h) + "." + b64(c)
	var sig []byte
	switch alg {
	case "EdDSA":
		sig, err = key.Sign(rand.Reader, []byte(input), crypto.Hash(0))
	case "ES256":
		// Any crypto.Signer (a KMS or HSM key too) signs ASN.1 DER;
		// JWS wants R || S, 32 bytes each (RFC 7518 §3.4).
		sum := sha256.Sum256([]byte(input))
		der, serr := key.Sign(rand.Reader, sum[:], crypto.SHA256)
		if serr != nil {
			return "", serr
		}
		var rs struct{ R, S *big.Int }
		if rest, aerr := asn1.Unmarshal(der, &rs); aerr != nil || len(rest) > 0 || rs.R == nil || rs.S == nil || rs.R.BitLen() > 256 || rs.S.BitLen() > 256 {
			return "", errors.New("client: the ECDSA signer's signature is not an ASN.1 (r, s) pair")
		}
		sig = append(rs.R.FillBytes(make([]byte, 32)), rs.S.FillBytes(make([]byte, 32))...)
	case "RS256":
		sum := sha256.Sum256([]byte(input))
		sig, err = key.Sign(rand.Reader, sum[:], crypto.SHA256)
	case "PS256":
		sum := sha256.Sum256([]byte(input))
		sig, err = key.Sign(rand.Reader, sum[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	default:
		return "", fmt.Errorf("client: unsupported algorithm %s", alg)
	}
	if err != nil {
		return "", err
	}
	return input + "." + b64(sig), nil
}
