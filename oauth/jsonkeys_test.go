package oauth

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecodeJSONStrictKeys(t *testing.T) {
	type body struct {
		AgentID string `json:"agent_id"`
		Secret  string `json:"agent_secret,omitempty"`
		Skipped string `json:"-"`
	}
	for in, want := range map[string]string{
		`{"agent_id":"a","agent_secret":"s"}`:    "",
		`{"agent_id":"a","unknown":{"x":[1,2]}}`: "",
		`{"agent_id":"a","agent_id":"b"}`:        "more than once",
		`{"Agent_ID":"a"}`:                       "only in case",
		`{"AGENT_SECRET":"s","agent_id":"a"}`:    "only in case",
		`{"x":1,"X":2}`:                          "only in case",
		`{"agent_id":"a"} {"agent_id":"b"}`:      "exactly one",
		`["agent_id"]`:                           "exactly one",
		`{"agent_id":1}`:                         "wrong type",
		`{"agent_id":"a",}`:                      "exactly one",
		``:                                       "empty",
		`   `:                                    "empty",
		`{"nested":{"agent_id":1,"agent_id":2}}`: "", // only the top level is a field
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(in))
		r.Header.Set("Content-Type", "application/json")
		var b body
		err := DecodeJSON(httptest.NewRecorder(), r, 1024, &b)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", in, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: %v, want %q", in, err, want)
		case err != nil && AsError(err).Code != "invalid_request":
			t.Errorf("%s: %v", in, err)
		}
	}
}

func TestReadParamsStrictKeys(t *testing.T) {
	for in, want := range map[string]string{
		`{"grant_type":"client_credentials"}`:                               "",
		`{"grant_type":"a","grant_type":"b"}`:                               "more than once",
		`{"Grant_Type":"client_credentials"}`:                               "only in case",
		`{"grant_type":"client_credentials","x_custom":"1","X_CUSTOM":"2"}`: "only in case",
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(in))
		r.Header.Set("Content-Type", "application/json")
		_, err := readParams(httptest.NewRecorder(), r, 1024)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

// Keys encoding/json would match to a field by Unicode simple folding are
// refused too (long s, Kelvin sign), so no two readings differ.
func TestDecodeJSONFoldedKeys(t *testing.T) {
	type body struct {
		Secret string `json:"agent_secret"`
		Key    string `json:"key"`
	}
	for _, in := range []string{
		`{"agent_secret":"a","agent_ſecret":"b"}`,
		`{"agent_ſecret":"b"}`,
		`{"\u212aey":"k"}`,
		`{"KEY":"k"}`,
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(in))
		r.Header.Set("Content-Type", "application/json")
		var b body
		if err := DecodeJSON(httptest.NewRecorder(), r, 1024, &b); err == nil || !strings.Contains(err.Error(), "only in case") {
			t.Errorf("%s: %v (decoded %+v)", in, err, b)
		}
	}
}
