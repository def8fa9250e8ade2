// Command assertions makes the client assertions (private_key_jwt, RFC 7523)
// bench/load.sh sends: the load generator cannot sign, so they are signed
// beforehand, one per line, each with its own jti (the server takes each
// once).
//
//	assertions -key key.pem -jwks key.jwks -new          # an ES256 key and its public JWK Set
//	assertions -key key.pem -client svc -aud URL -n 100000 -out assertions.txt
//
// The assertions are valid for five minutes from when they are made.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const kid = "load-1"

func main() {
	keyFile := flag.String("key", "", "the private key (PEM, PKCS#8)")
	jwksFile := flag.String("jwks", "", "with -new: where to write the public JWK Set")
	newKey := flag.Bool("new", false, "make a new ES256 key")
	client := flag.String("client", "", "the client id (iss and sub)")
	aud := flag.String("aud", "", "the audience (the token endpoint's URL)")
	n := flag.Int("n", 0, "how many assertions")
	out := flag.String("out", "", "where to write them, one per line")
	flag.Parse()
	var err error
	if *newKey {
		err = makeKey(*keyFile, *jwksFile)
	} else {
		err = makeAssertions(*keyFile, *client, *aud, *n, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "assertions:", err)
		os.Exit(1)
	}
}

func makeKey(keyFile, jwksFile string) error {
	if keyFile == "" || jwksFile == "" {
		return errors.New("-new needs -key and -jwks")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	raw, err := key.PublicKey.ECDH()
	if err != nil {
		return err
	}
	b := raw.Bytes()
	b64 := base64.RawURLEncoding.EncodeToString
	set, err := json.Marshal(map[string]any{"keys": []any{map[string]string{
		"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig", "x": b64(b[1:33]), "y": b64(b[33:]),
	}}})
	if err != nil {
		return err
	}
	return os.WriteFile(jwksFile, set, 0o644)
}

func makeAssertions(keyFile, client, aud string, n int, out string) error {
	if keyFile == "" || client == "" || aud == "" || n <= 0 || out == "" {
		return errors.New("need -key, -client, -aud, -n and -out")
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return errors.New("the key file holds no PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return errors.New("the key is not an ECDSA key")
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	now := time.Now()
	for i := range n {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"iss": client, "sub": client, "aud": aud, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
			"jti": fmt.Sprintf("load-%d-%d", now.UnixNano(), i),
		})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, s)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
