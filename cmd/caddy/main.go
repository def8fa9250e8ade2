// Command caddy is Caddy with its standard modules and the Auth Agent plugin.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/authagent/caddy-authagent"
)

func main() {
	caddycmd.Main()
}
