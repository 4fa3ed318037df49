package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// command is one subcommand of the binary.
type command struct {
	name    string
	summary string
	// run parses args with the command's own flag set and does the work.
	run func(ctx context.Context, env *environment, args []string) error
}

// environment is what commands may touch of the outside world, so tests can
// run them in-process.
type environment struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// sawFlags, when set, is shown each command's flag set before it is
	// parsed: the README's configuration table is generated from them.
	sawFlags func(*flag.FlagSet)
}

func commands() []command {
	return []command{
		{"serve", "run the gateway: the API, the stream consumer and webhook delivery", runServe},
		{"dev", "try Outflow on one machine: Kafka, feature server, PostgreSQL, gateway and demo data in one process", runDev},
		{"featureserver", "run the reference feature server (a local stand-in for Tecton's GetFeatures API)", runFeatureServer},
		{"demo-producer", "write demo output-stream records (feature view user_items_added_to_cart) to Kafka", runDemoProducer},
		{"migrate", "apply or undo database migrations: migrate [up|down N|status]", runMigrate},
		{"apikey", "manage API keys: apikey create|list|revoke", runAPIKey},
		{"secrets", "manage the keys that encrypt webhook secrets: secrets generate-key|rotate-key", runSecrets},
		{"replay", "replay a subscription's events of a time range: replay start|get|list", runReplay},
		{"version", "print the version", runVersion},
	}
}

// errUsage marks errors whose message was already printed with usage.
var errUsage = errors.New("usage error")

// run executes the command line and returns the process exit code: 0 on
// success, 1 on failure, 2 on a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	env := &environment{stdout: stdout, stderr: stderr, getenv: os.Getenv}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			return run(ctx, []string{args[1], "--help"}, stdout, stderr)
		}
		printUsage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "outflow %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "outflow: unknown command %q\n\n", args[0])
	printUsage(stderr)
	return 2
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: outflow <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Outflow fans feature output streams out to webhooks and gRPC streams.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'outflow <command> --help' for a command's flags. Every flag can also be")
	fmt.Fprintln(w, "set with an environment variable: --database-url is OUTFLOW_DATABASE_URL.")
}

// newFlagSet returns the flag set of the command name.
func newFlagSet(env *environment, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("outflow "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	// A bad flag gets the parser's one-line complaint and a hint (see
	// parseFlags); the full usage is printed for --help only.
	fs.Usage = func() {}
	return fs
}

// printFlagUsage writes a command's full usage: each flag with its
// environment variable and default.
func printFlagUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s [flags]%s\n\nFlags:\n", fs.Name(), operands(fs.Name()))
	fs.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(w, "  --%s (env %s)\n    \t%s", f.Name, envName(f.Name), f.Usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// operands describes the positional arguments a command takes after its
// flags, for its usage line.
func operands(name string) string {
	switch name {
	case "outflow migrate":
		return " [up | down N | status]  (default up; status lists applied and pending migrations)"
	case "outflow apikey revoke":
		return " KEY_ID"
	}
	return ""
}

// parseFlags parses args, then sets every flag not given on the command line
// from its OUTFLOW_* environment variable. Help goes to stdout and returns
// flag.ErrHelp; bad flags return errUsage after printing the problem.
func parseFlags(env *environment, fs *flag.FlagSet, args []string) error {
	if env.sawFlags != nil {
		env.sawFlags(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printFlagUsage(env.stdout, fs)
			return flag.ErrHelp
		}
		fmt.Fprintf(env.stderr, "Run '%s --help' for usage.\n", fs.Name())
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v := env.getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
			}
		}
	})
	if len(errs) > 0 {
		fmt.Fprintf(env.stderr, "%s: %v\n", fs.Name(), errors.Join(errs...))
		return errUsage
	}
	return nil
}

// envName is the environment variable of a flag: --database-url is
// OUTFLOW_DATABASE_URL.
func envName(flagName string) string {
	return "OUTFLOW_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// logFlags are the logging flags every long-running command has.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "json", "log format: json or text")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", l.format)
}

// requireFlags fails when any named string flag is empty.
func requireFlags(fs *flag.FlagSet, names ...string) error {
	var missing []string
	for _, n := range names {
		if f := fs.Lookup(n); f != nil && f.Value.String() == "" {
			missing = append(missing, "--"+n+" (or "+envName(n)+")")
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("missing required flag: %s", strings.Join(missing, ", "))
	}
	return nil
}

// noArgs fails when positional arguments remain after the flags.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
