// Command postmangen makes the Postman collection of the API
// (api/postman_collection.json) from its OpenAPI document
// (api/openapi.yaml), the source of truth:
//
//	go generate ./api
//
// which runs, in api/,
//
//	go run ./internal/postmangen -o postman_collection.json openapi.yaml
//
// Everything a request is made of comes from the document: its name (the
// operation's summary), description, method, path, query parameters,
// headers, security and body (one of the operation's request examples).
// What the document cannot say is the flow that runs the requests top to
// bottom against a fresh server: which operation and example each step
// uses, which example values become collection variables, and the scripts
// that make ids and PKCE values before a request and check the answer and
// keep tokens after it. That is the table in flow.go. The output is
// deterministic (no timestamps, no random ids), so CI can compare the
// committed file with a fresh one.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// schemaURL is Postman Collection v2.1's schema.
const schemaURL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"

func main() {
	out := flag.String("o", "", "write the collection to this file (default: standard output)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: postmangen [-o postman_collection.json] openapi.yaml")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	doc, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fatal(err)
	}
	coll, err := generate(doc, flow)
	if err != nil {
		fatal(fmt.Errorf("%s: %w", flag.Arg(0), err))
	}
	if *out == "" || *out == "-" {
		_, err = os.Stdout.Write(coll)
	} else {
		err = os.WriteFile(*out, coll, 0o644)
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "postmangen:", err)
	os.Exit(1)
}

// folder is a group of steps in the collection.
type folder struct {
	name        string
	description string
	steps       []step
}

// step is one request of the flow.
type step struct {
	// id is the item's id in the collection (stable, unique).
	id string
	// op is the operationId of the request.
	op string
	// label, when set, follows the operation's summary in the request's
	// name (one operation can appear in several steps).
	label string
	// media is the request body's media type; empty means the first the
	// operation lists.
	media string
	// example names the request body's example; empty means the media
	// type's single `example` (an operation with a body must have one).
	example string
	// set replaces the example's values of these body fields, query
	// parameters or header parameters (usually with a {{variable}}); every
	// name must exist in the document.
	set map[string]string
	// bearer is the variable holding the access token to send, for an
	// operation secured by a bearer token.
	bearer string
	// note is added to the operation's description.
	note string
	// prerequest and test are the scripts run before and after the
	// request. `$example.<field>` in them stands for the JSON value of that
	// field in the chosen example, as the document has it.
	prerequest, test string
}

// The collection's JSON (Postman Collection v2.1), in the order Postman
// writes it.
type (
	collection struct {
		Info     info       `json:"info"`
		Item     []item     `json:"item"`
		Variable []variable `json:"variable"`
	}
	info struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
		Schema      string `json:"schema"`
	}
	item struct {
		ID          string   `json:"id,omitempty"`
		Name        string   `json:"name"`
		Description string   `json:"description,omitempty"`
		Item        []item   `json:"item,omitempty"`
		Event       []event  `json:"event,omitempty"`
		Request     *request `json:"request,omitempty"`
	}
	event struct {
		Listen string `json:"listen"`
		Script script `json:"script"`
	}
	script struct {
		Type string   `json:"type"`
		Exec []string `json:"exec"`
	}
	request struct {
		Method      string `json:"method"`
		Header      []kv   `json:"header"`
		Auth        *auth  `json:"auth,omitempty"`
		Body        *body  `json:"body,omitempty"`
		URL         url    `json:"url"`
		Description string `json:"description,omitempty"`
	}
	kv struct {
		Key         string `json:"key"`
		Value       string `json:"value"`
		Type        string `json:"type,omitempty"`
		Description string `json:"description,omitempty"`
		Disabled    bool   `json:"disabled,omitempty"`
	}
	auth struct {
		Type   string `json:"type"`
		Bearer []kv   `json:"bearer,omitempty"`
	}
	body struct {
		Mode       string       `json:"mode"`
		Raw        string       `json:"raw,omitempty"`
		URLEncoded []kv         `json:"urlencoded,omitempty"`
		Options    *bodyOptions `json:"options,omitempty"`
	}
	bodyOptions struct {
		Raw struct {
			Language string `json:"language"`
		} `json:"raw"`
	}
	url struct {
		Raw   string   `json:"raw"`
		Host  []string `json:"host"`
		Path  []string `json:"path"`
		Query []kv     `json:"query,omitempty"`
	}
	variable struct {
		Key   string `json:"key"`
		Value string `json:"value"`
		Type  string `json:"type"`
	}
)

// generate makes the collection of the flow from the OpenAPI document.
func generate(docYAML []byte, flow []folder) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(docYAML, &root); err != nil {
		return nil, fmt.Errorf("reading the document: %w", err)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the document is not a YAML mapping")
	}
	d := &document{root: root.Content[0]}
	ops, err := d.operations()
	if err != nil {
		return nil, err
	}

	title := d.scalar(d.root, "info", "title")
	baseURL := d.scalar(d.root, "servers", "0", "url")
	if title == "" || baseURL == "" {
		return nil, errors.New("the document needs info.title and servers[0].url (the collection's name and baseUrl)")
	}
	coll := collection{
		Info: info{
			Name: title,
			Description: strings.TrimSpace(d.scalar(d.root, "info", "description")) + "\n\n" +
				"This collection runs top to bottom against a fresh server started from `Caddyfile.example` " +
				"(`newman run postman_collection.json`): it registers an agent with a new id, signs it in to the " +
				"example's website `demo-site`, and keeps ids and tokens in collection variables. `baseUrl` is " +
				"the issuer. Made from `openapi.yaml` by `go generate ./api`; do not edit it by hand.",
			Schema: schemaURL,
		},
		Item: []item{},
	}

	var (
		set      = map[string]bool{"baseUrl": true} // variables set so far
		varOrder []string                           // in the order first set
		ids      = map[string]bool{}
	)
	for _, f := range flow {
		folderItem := item{Name: f.name, Description: f.description}
		for _, s := range f.steps {
			if s.id == "" || ids[s.id] {
				return nil, fmt.Errorf("step %q of the flow: ids must be unique and not empty", s.id)
			}
			ids[s.id] = true
			op, ok := ops[s.op]
			if !ok {
				return nil, fmt.Errorf("the flow's step %q names operation %q, which the document does not have", s.id, s.op)
			}
			it, err := d.item(s, op)
			if err != nil {
				return nil, fmt.Errorf("the flow's step %q (operation %s): %w", s.id, s.op, err)
			}
			// Every variable a request uses is set before it is sent: by
			// its own pre-request script or an earlier step's scripts.
			for _, name := range scriptSets(s.prerequest) {
				if !set[name] {
					set[name] = true
					varOrder = append(varOrder, name)
				}
			}
			reqJSON, _ := json.Marshal(it.Request)
			for _, m := range usedVariable.FindAllStringSubmatch(string(reqJSON), -1) {
				if !set[m[1]] {
					return nil, fmt.Errorf("the flow's step %q uses {{%s}}, which no script sets before it", s.id, m[1])
				}
			}
			for _, name := range scriptSets(s.test) {
				if !set[name] {
					set[name] = true
					varOrder = append(varOrder, name)
				}
			}
			folderItem.Item = append(folderItem.Item, it)
		}
		coll.Item = append(coll.Item, folderItem)
	}
	coll.Variable = append(coll.Variable, variable{Key: "baseUrl", Value: baseURL, Type: "string"})
	for _, name := range varOrder {
		coll.Variable = append(coll.Variable, variable{Key: name, Value: "", Type: "string"})
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(coll); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var (
	// usedVariable is a {{variable}} in a request.
	usedVariable = regexp.MustCompile(`\{\{([A-Za-z0-9_]+)\}\}`)
	// setVariable is a script's setting of a collection variable.
	setVariable = regexp.MustCompile(`pm\.collectionVariables\.set\('([A-Za-z0-9_]+)'`)
	// exampleValue stands for a value of the step's example in a script.
	exampleValue = regexp.MustCompile(`\$example\.([A-Za-z0-9_]+)`)
)

// scriptSets are the collection variables a script sets, in order.
func scriptSets(js string) []string {
	var names []string
	for _, m := range setVariable.FindAllStringSubmatch(js, -1) {
		names = append(names, m[1])
	}
	return names
}

// operation is one operation of the document.
type operation struct {
	method, path string
	node         *yaml.Node
	pathItem     *yaml.Node
}

// document is the parsed OpenAPI document, read in its own order.
type document struct{ root *yaml.Node }

// operations are the document's operations by operationId.
func (d *document) operations() (map[string]operation, error) {
	paths := get(d.root, "paths")
	if paths == nil || paths.Kind != yaml.MappingNode {
		return nil, errors.New("the document has no paths")
	}
	ops := map[string]operation{}
	for i := 0; i+1 < len(paths.Content); i += 2 {
		path, pathItem := paths.Content[i].Value, d.resolve(paths.Content[i+1])
		for j := 0; j+1 < len(pathItem.Content); j += 2 {
			method := pathItem.Content[j].Value
			if !slices.Contains([]string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}, method) {
				continue
			}
			op := pathItem.Content[j+1]
			id := d.scalar(op, "operationId")
			if id == "" {
				continue
			}
			if _, dup := ops[id]; dup {
				return nil, fmt.Errorf("operationId %q is used twice", id)
			}
			ops[id] = operation{method: strings.ToUpper(method), path: path, node: op, pathItem: pathItem}
		}
	}
	return ops, nil
}

// item makes the request of a step.
func (d *document) item(s step, op operation) (item, error) {
	summary := d.scalar(op.node, "summary")
	if summary == "" {
		return item{}, errors.New("the operation has no summary (the request's name)")
	}
	name := summary
	if s.label != "" {
		name += " — " + s.label
	}
	description := strings.TrimSpace(d.scalar(op.node, "description"))
	if description == "" {
		description = summary + "."
	}
	if s.note != "" {
		description += "\n\n" + s.note
	}
	used := map[string]bool{} // the names of s.set that exist in the document

	req := &request{Method: op.method, Header: []kv{}, Description: description}

	// Parameters: the path item's, then the operation's.
	var query []kv
	var params []*yaml.Node
	if p := get(op.pathItem, "parameters"); p != nil {
		params = append(params, p.Content...)
	}
	if p := get(op.node, "parameters"); p != nil {
		params = append(params, p.Content...)
	}
	for _, p := range params {
		p = d.resolve(p)
		pname, in := d.scalar(p, "name"), d.scalar(p, "in")
		value, has := s.set[pname]
		if has {
			used[pname] = true
		} else if v := d.scalar(p, "example"); v != "" {
			value, has = v, true
		} else if v := d.scalar(p, "schema", "const"); v != "" {
			value, has = v, true
		}
		pdesc := strings.TrimSpace(d.scalar(p, "description"))
		switch in {
		case "query":
			// Optional parameters the step does not send are listed,
			// disabled, so a person sees them.
			query = append(query, kv{Key: pname, Value: value, Description: pdesc, Disabled: !has})
		case "header":
			if has {
				req.Header = append(req.Header, kv{Key: pname, Value: value, Type: "text", Description: pdesc})
			}
		case "path":
			return item{}, fmt.Errorf("path parameter %q: not supported", pname)
		}
	}

	// The body: the chosen example of the chosen media type.
	var example *yaml.Node
	if rb := get(op.node, "requestBody"); rb != nil {
		content := get(d.resolve(rb), "content")
		if content == nil || len(content.Content) == 0 {
			return item{}, errors.New("the request body has no content")
		}
		media := s.media
		if media == "" {
			media = content.Content[0].Value
		}
		mt := get(content, media)
		if mt == nil {
			return item{}, fmt.Errorf("the request body has no %s content", media)
		}
		if s.example == "" {
			example = get(mt, "example")
			if example == nil {
				return item{}, fmt.Errorf("the %s request body has no single `example`; name one of its examples", media)
			}
		} else {
			ex := get(mt, "examples", s.example)
			if ex == nil {
				return item{}, fmt.Errorf("the %s request body has no example %q", media, s.example)
			}
			example = get(d.resolve(ex), "value")
			if example == nil {
				return item{}, fmt.Errorf("the %s request body's example %q has no value", media, s.example)
			}
		}
		example = d.resolve(example)
		if example.Kind != yaml.MappingNode {
			return item{}, fmt.Errorf("the %s request body's example is not an object", media)
		}
		req.Header = append(req.Header, kv{Key: "Content-Type", Value: media, Type: "text"})
		switch media {
		case "application/json":
			raw, err := jsonOf(example, "", s.set, used)
			if err != nil {
				return item{}, err
			}
			req.Body = &body{Mode: "raw", Raw: raw, Options: &bodyOptions{}}
			req.Body.Options.Raw.Language = "json"
		case "application/x-www-form-urlencoded":
			var fields []kv
			for i := 0; i+1 < len(example.Content); i += 2 {
				k, v := example.Content[i].Value, example.Content[i+1]
				if v.Kind != yaml.ScalarNode {
					return item{}, fmt.Errorf("form field %q of the example is not a scalar", k)
				}
				value := v.Value
				if r, ok := s.set[k]; ok {
					value, used[k] = r, true
				}
				fields = append(fields, kv{Key: k, Value: value, Type: "text"})
			}
			req.Body = &body{Mode: "urlencoded", URLEncoded: fields}
		default:
			return item{}, fmt.Errorf("request body media type %s: not supported", media)
		}
	} else if s.example != "" || s.media != "" {
		return item{}, fmt.Errorf("the flow names example %q, but the operation has no request body", s.example)
	}
	for k := range s.set {
		if !used[k] {
			return item{}, fmt.Errorf("the flow sets %q, which is neither a parameter of the operation nor a field of its example", k)
		}
	}

	// Security: a bearer token when the operation takes one; otherwise
	// no auth (credentials, where needed, are in the body).
	if d.securedBy(op.node, "bearer") {
		if s.bearer == "" {
			return item{}, errors.New("the operation takes a bearer token: the step must name its variable")
		}
		req.Auth = &auth{Type: "bearer", Bearer: []kv{{Key: "token", Value: "{{" + s.bearer + "}}", Type: "string"}}}
	} else {
		if s.bearer != "" {
			return item{}, errors.New("the step sends a bearer token, but the operation does not take one")
		}
		req.Auth = &auth{Type: "noauth"}
	}

	// The URL.
	req.URL = url{Host: []string{"{{baseUrl}}"}, Path: strings.Split(strings.TrimPrefix(op.path, "/"), "/"), Query: query}
	raw := "{{baseUrl}}" + op.path
	sep := "?"
	for _, q := range query {
		if !q.Disabled {
			raw += sep + q.Key + "=" + q.Value
			sep = "&"
		}
	}
	req.URL.Raw = raw

	it := item{ID: s.id, Name: name, Request: req}
	for _, ev := range []struct{ listen, js string }{{"prerequest", s.prerequest}, {"test", s.test}} {
		if strings.TrimSpace(ev.js) == "" {
			continue
		}
		js, err := withExampleValues(ev.js, example)
		if err != nil {
			return item{}, fmt.Errorf("the %s script: %w", ev.listen, err)
		}
		it.Event = append(it.Event, event{Listen: ev.listen, Script: script{Type: "text/javascript", Exec: strings.Split(strings.Trim(js, "\n"), "\n")}})
	}
	return it, nil
}

// withExampleValues replaces $example.<field> in a script by the JSON of
// the field's value in the example.
func withExampleValues(js string, example *yaml.Node) (string, error) {
	var err error
	js = exampleValue.ReplaceAllStringFunc(js, func(m string) string {
		field := exampleValue.FindStringSubmatch(m)[1]
		var v *yaml.Node
		if example != nil {
			v = get(example, field)
		}
		if v == nil {
			err = fmt.Errorf("%s: the example has no field %q", m, field)
			return m
		}
		s, e := jsonOf(v, "", nil, nil)
		if e != nil {
			err = e
		}
		return s
	})
	return js, err
}

// securedBy reports whether an operation accepts the security scheme.
func (d *document) securedBy(op *yaml.Node, scheme string) bool {
	sec := get(op, "security")
	if sec == nil {
		sec = get(d.root, "security")
	}
	if sec == nil {
		return false
	}
	for _, req := range sec.Content {
		if get(req, scheme) != nil {
			return true
		}
	}
	return false
}

// jsonOf is a YAML value as JSON indented by two spaces, its mappings in
// the document's order, with the top-level fields named in set replaced
// (and noted in used).
func jsonOf(n *yaml.Node, indent string, set map[string]string, used map[string]bool) (string, error) {
	switch n.Kind {
	case yaml.AliasNode:
		return jsonOf(n.Alias, indent, set, used)
	case yaml.MappingNode:
		if len(n.Content) == 0 {
			return "{}", nil
		}
		var b strings.Builder
		b.WriteString("{\n")
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			key, _ := json.Marshal(k)
			var v string
			if r, ok := set[k]; ok {
				q, _ := marshal(r)
				v, used[k] = q, true
			} else {
				var err error
				if v, err = jsonOf(n.Content[i+1], indent+"  ", nil, nil); err != nil {
					return "", err
				}
			}
			b.WriteString(indent + "  " + string(key) + ": " + v)
			if i+2 < len(n.Content) {
				b.WriteString(",")
			}
			b.WriteString("\n")
		}
		b.WriteString(indent + "}")
		return b.String(), nil
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			return "[]", nil
		}
		parts := make([]string, len(n.Content))
		for i, e := range n.Content {
			var err error
			if parts[i], err = jsonOf(e, indent+"  ", nil, nil); err != nil {
				return "", err
			}
		}
		return "[" + strings.Join(parts, ", ") + "]", nil
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return "", err
		}
		return marshal(v)
	}
	return "", fmt.Errorf("line %d: a YAML value JSON cannot hold", n.Line)
}

// marshal is json.Marshal without HTML escaping.
func marshal(v any) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// get follows keys (or sequence indexes) from a node; nil when absent.
func get(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		if n == nil {
			return nil
		}
		switch n.Kind {
		case yaml.MappingNode:
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == k {
					next = n.Content[i+1]
					break
				}
			}
			n = next
		case yaml.SequenceNode:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(n.Content) {
				return nil
			}
			n = n.Content[i]
		default:
			return nil
		}
	}
	return n
}

// scalar is the string value at keys, or "".
func (d *document) scalar(n *yaml.Node, keys ...string) string {
	n = get(n, keys...)
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// resolve follows a local $ref (#/components/…), however many there are.
func (d *document) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; i < 32 && n != nil; i++ {
		ref := d.scalar(n, "$ref")
		if !strings.HasPrefix(ref, "#/") {
			return n
		}
		var keys []string
		for _, k := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			keys = append(keys, strings.ReplaceAll(strings.ReplaceAll(k, "~1", "/"), "~0", "~"))
		}
		target := get(d.root, keys...)
		if target == nil {
			return n
		}
		n = target
	}
	return n
}
