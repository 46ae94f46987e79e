// Package version holds the build version, set with -ldflags -X at build time.
package version

// Version is the release or commit this binary was built from.
var Version = "dev"
