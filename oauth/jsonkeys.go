package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"unicode"
)

// Strict JSON keys. encoding/json lets the last of two equal keys win and
// matches field names case-insensitively; a proxy or WAF in front may read
// the same body the other way (first key wins, "Agent_ID" is not
// "agent_id"). Bodies that could be read two ways are refused instead.

var errNotObject = errors.New("not a JSON object")

// objectKeys returns the keys of the JSON object body, in order.
func objectKeys(body []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errNotObject
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, ok := t.(string)
		if !ok {
			return nil, errNotObject
		}
		keys = append(keys, k)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// checkKeys refuses a key given twice, and a key that differs only in case
// from a known field name or from another key of the object.
func checkKeys(keys, known []string) error {
	folded := make(map[string]string, len(keys)+len(known))
	for _, f := range known {
		folded[foldKey(f)] = f
	}
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if seen[k] {
			return ErrInvalidRequest("field " + strconvQuote(k) + " is given more than once")
		}
		seen[k] = true
		fk := foldKey(k)
		if other, ok := folded[fk]; ok && other != k {
			return ErrInvalidRequest("field " + strconvQuote(k) + " differs from " + strconvQuote(other) + " only in case: field names are case-sensitive")
		}
		folded[fk] = k
	}
	return nil
}

// foldKey folds s the way encoding/json matches field names (Unicode simple
// case folding, as bytes.EqualFold): each rune becomes the smallest of its
// folding orbit, so "agent_ſecret" (long s) and "AGENT_SECRET" fold like
// "agent_secret".
func foldKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		min := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < min {
				min = f
			}
		}
		b.WriteRune(min)
	}
	return b.String()
}

// jsonFields lists the JSON names of the fields of v's struct type (v a
// pointer to a struct; anything else has none), embedded structs included.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	if cached, ok := fieldCache.Load(t); ok {
		return cached.([]string)
	}
	var names []string
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					walk(ft)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			names = append(names, name)
		}
	}
	walk(t)
	fieldCache.Store(t, names)
	return names
}

var fieldCache sync.Map // reflect.Type → []string

// formParams are the parameters of the token, introspection and
// revocation endpoints; a JSON body naming one in another case is refused.
var formParams = []string{
	"grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "client_id", "client_secret",
	"scope", "resource", "audience", "token", "token_type_hint", "subject_token", "subject_token_type",
	"actor_token", "actor_token_type", "requested_token_type", "assertion", "client_assertion", "client_assertion_type",
}
