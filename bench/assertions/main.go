// Command assertions makes the client assertions (private_key_jwt, RFC 7523)
// and the DPoP proofs (RFC 9449) bench/load.sh sends: the load generator
// cannot sign, so they are signed beforehand, one per line, each with its
// own jti (the server takes each once).
//
//	assertions -key key.pem -jwks key.jwks -new          # an ES256 key and its public JWK Set
//	assertions -key key.pem -client svc -aud URL -n 100000 -out assertions.txt
//	assertions -key dpop.pem -dpop -htm GET -htu URL -token token.txt -n 100000 -out proofs.txt
//
// The assertions are valid for five minutes from when they are made. A
// proof's iat is when it was signed: the server takes it for dpop_leeway
// (60 s by default) either side of its clock. With -token, each proof
// carries the ath of the access token in that file (a proof for a
// resource server); without, none (a proof for the token endpoint).
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const kid = "load-1"

var b64 = base64.RawURLEncoding.EncodeToString

func main() {
	keyFile := flag.String("key", "", "the private key (PEM, PKCS#8)")
	jwksFile := flag.String("jwks", "", "with -new: where to write the public JWK Set")
	newKey := flag.Bool("new", false, "make a new ES256 key")
	client := flag.String("client", "", "the client id (iss and sub)")
	aud := flag.String("aud", "", "the audience (the token endpoint's URL)")
	dpop := flag.Bool("dpop", false, "make DPoP proofs (with -htm, -htu, and -token for an ath) instead of assertions")
	htm := flag.String("htm", "", "with -dpop: the method of the requests (htm)")
	htu := flag.String("htu", "", "with -dpop: the URL of the requests, without query (htu)")
	tokenFile := flag.String("token", "", "with -dpop: a file holding the access token the proofs go with (ath)")
	n := flag.Int("n", 0, "how many assertions or proofs")
	out := flag.String("out", "", "where to write them, one per line")
	flag.Parse()
	var err error
	switch {
	case *newKey:
		err = makeKey(*keyFile, *jwksFile)
	case *dpop:
		err = makeProofs(*keyFile, *htm, *htu, *tokenFile, *n, *out)
	default:
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
	jwk, err := publicJWK(key)
	if err != nil {
		return err
	}
	jwk["kid"], jwk["alg"], jwk["use"] = kid, "ES256", "sig"
	set, err := json.Marshal(map[string]any{"keys": []any{jwk}})
	if err != nil {
		return err
	}
	return os.WriteFile(jwksFile, set, 0o644)
}

// publicJWK is the public JWK of key: its RFC 7638 members only.
func publicJWK(key *ecdsa.PrivateKey) (map[string]string, error) {
	raw, err := key.PublicKey.ECDH()
	if err != nil {
		return nil, err
	}
	b := raw.Bytes()
	return map[string]string{"kty": "EC", "crv": "P-256", "x": b64(b[1:33]), "y": b64(b[33:])}, nil
}

func readKey(keyFile string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("the key file holds no PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("the key is not an ECDSA key")
	}
	return key, nil
}

func makeAssertions(keyFile, client, aud string, n int, out string) error {
	if keyFile == "" || client == "" || aud == "" || n <= 0 || out == "" {
		return errors.New("need -key, -client, -aud, -n and -out")
	}
	key, err := readKey(keyFile)
	if err != nil {
		return err
	}
	now := time.Now()
	return sign(n, out, func(i int) (string, error) {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"iss": client, "sub": client, "aud": aud, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
			"jti": fmt.Sprintf("load-%d-%d", now.UnixNano(), i),
		})
		tok.Header["kid"] = kid
		return tok.SignedString(key)
	})
}

func makeProofs(keyFile, htm, htu, tokenFile string, n int, out string) error {
	if keyFile == "" || htm == "" || htu == "" || n <= 0 || out == "" {
		return errors.New("-dpop needs -key, -htm, -htu, -n and -out")
	}
	key, err := readKey(keyFile)
	if err != nil {
		return err
	}
	jwk, err := publicJWK(key)
	if err != nil {
		return err
	}
	ath := ""
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return err
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return errors.New(tokenFile + " holds no token")
		}
		sum := sha256.Sum256([]byte(token))
		ath = b64(sum[:])
	}
	start := time.Now().UnixNano()
	return sign(n, out, func(i int) (string, error) {
		claims := jwt.MapClaims{"jti": fmt.Sprintf("dpop-%d-%d", start, i), "htm": htm, "htu": htu, "iat": time.Now().Unix()}
		if ath != "" {
			claims["ath"] = ath
		}
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
		tok.Header["typ"] = "dpop+jwt"
		tok.Header["jwk"] = jwk
		return tok.SignedString(key)
	})
}

// sign writes one(0) … one(n-1) to out, one per line in that order,
// signed on every CPU (the load script waits for them between runs).
func sign(n int, out string, one func(i int) (string, error)) error {
	lines := make([]string, n)
	workers := min(runtime.GOMAXPROCS(0), n)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				s, err := one(i)
				if err != nil {
					errs[w] = err
					return
				}
				lines[i] = s
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, s := range lines {
		fmt.Fprintln(w, s)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
