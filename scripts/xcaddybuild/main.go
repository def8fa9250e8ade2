// Command xcaddybuild builds a custom Caddy as xcaddy.json describes: the
// Caddy version, the xcaddy version to build with, and the plugins (a local
// "replace" path makes xcaddy build this checkout). It then runs
// `caddy list-modules` and fails unless every expected module is there.
//
//	go run ./scripts/xcaddybuild -manifest xcaddy.json -o ./caddy
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

type manifest struct {
	CaddyVersion  string `json:"caddy_version"`
	XcaddyVersion string `json:"xcaddy_version"`
	Plugins       []struct {
		Module  string `json:"module"`
		Version string `json:"version"`
		Replace string `json:"replace"`
	} `json:"plugins"`
	ExpectedModules []string `json:"expected_modules"`
}

func main() {
	manifestPath := flag.String("manifest", "xcaddy.json", "the build manifest")
	output := flag.String("o", "caddy", "where to write the binary")
	flag.Parse()
	if err := run(*manifestPath, *output); err != nil {
		fmt.Fprintln(os.Stderr, "xcaddybuild:", err)
		os.Exit(1)
	}
}

func run(manifestPath, output string) error {
	raw, err := os.ReadFile(manifestPath)
	if err != nil {
		return err
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("%s: %v", manifestPath, err)
	}
	if m.CaddyVersion == "" || m.XcaddyVersion == "" || len(m.Plugins) == 0 {
		return fmt.Errorf("%s: caddy_version, xcaddy_version and plugins are required", manifestPath)
	}
	base := filepath.Dir(manifestPath)
	out, err := filepath.Abs(output)
	if err != nil {
		return err
	}
	args := []string{"run", "github.com/caddyserver/xcaddy/cmd/xcaddy@" + m.XcaddyVersion, "build", m.CaddyVersion, "--output", out}
	for _, p := range m.Plugins {
		with := p.Module
		switch {
		case p.Replace != "":
			dir, err := filepath.Abs(filepath.Join(base, p.Replace))
			if err != nil {
				return err
			}
			with += "@v0.0.0=" + dir // a fixed version: nothing to look up in the module proxy
		case p.Version != "":
			with += "@" + p.Version
		}
		args = append(args, "--with", with)
	}
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	fmt.Fprintln(os.Stderr, "go", strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("xcaddy build: %v", err)
	}
	list, err := exec.Command(out, "list-modules").Output()
	if err != nil {
		return fmt.Errorf("%s list-modules: %v", out, err)
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(list), "\n") {
		have[strings.TrimSpace(line)] = true
	}
	for _, want := range m.ExpectedModules {
		if !have[want] {
			return fmt.Errorf("built binary lacks module %s", want)
		}
	}
	fmt.Fprintf(os.Stderr, "built %s with %s\n", out, strings.Join(m.ExpectedModules, ", "))
	return nil
}
