package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// These tests keep docker-compose.yml and the Dockerfile honest without a
// Docker engine: the services are wired as documented, and every outflow
// command line in the compose file is one the real CLI accepts.

const (
	composePath    = "../../docker-compose.yml"
	dockerfilePath = "../../Dockerfile"
	// outflowImage is the image every outflow service runs, built from the
	// Dockerfile.
	outflowImage = "outflow:local"
)

// composeFile is the part of a compose file these tests read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image           string                       `yaml:"image"`
	Build           *composeBuild                `yaml:"build"`
	PullPolicy      string                       `yaml:"pull_policy"`
	Entrypoint      composeArgs                  `yaml:"entrypoint"`
	Command         composeArgs                  `yaml:"command"`
	Environment     map[string]string            `yaml:"environment"`
	Ports           []string                     `yaml:"ports"`
	DependsOn       map[string]composeDependency `yaml:"depends_on"`
	Healthcheck     *composeHealthcheck          `yaml:"healthcheck"`
	Restart         string                       `yaml:"restart"`
	StopGracePeriod string                       `yaml:"stop_grace_period"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

type composeDependency struct {
	Condition string `yaml:"condition"`
}

type composeHealthcheck struct {
	Test    composeArgs `yaml:"test"`
	Disable bool        `yaml:"disable"`
}

// composeArgs is a command, entrypoint or healthcheck test in list form.
type composeArgs []string

func (a *composeArgs) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		// Compose splits the string form with shell rules, which these tests
		// do not reimplement.
		return fmt.Errorf("line %d: write it as a list, not a string", n.Line)
	}
	var args []string
	if err := n.Decode(&args); err != nil {
		return err
	}
	*a = args
	return nil
}

func (s composeService) isOutflow() bool { return s.Build != nil || s.Image == outflowImage }

func (s composeService) hasHealthcheck() bool {
	return s.Healthcheck != nil && !s.Healthcheck.Disable && len(s.Healthcheck.Test) > 0 && s.Healthcheck.Test[0] != "NONE"
}

// isOneShot reports whether the service is a task that runs to completion:
// nothing restarts it.
func (s composeService) isOneShot() bool { return s.Restart == "" || s.Restart == "no" }

func loadCompose(t *testing.T) (composeFile, string) {
	t.Helper()
	text, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(text, &f); err != nil {
		t.Fatalf("parsing %s: %v", composePath, err)
	}
	return f, string(text)
}

// TestComposeServices checks the services of docker-compose.yml and how they
// are wired.
func TestComposeServices(t *testing.T) {
	t.Parallel()
	f, _ := loadCompose(t)
	const (
		healthy   = "service_healthy"
		completed = "service_completed_successfully"
		started   = "service_started"
	)
	tests := []struct {
		name    string
		outflow bool // runs outflowImage, built from the Dockerfile
		// healthcheck: only services whose images have the tools for one; see
		// the compose file's header for why the outflow services have none.
		healthcheck bool
		oneShot     bool // runs to completion, never restarted
		dependsOn   map[string]string
		ports       []string // container ports published
		// minStop is the least stop_grace_period: SIGTERM must have time to
		// finish before Docker's SIGKILL.
		minStop time.Duration
	}{
		{name: "postgres", healthcheck: true},
		{name: "kafka", healthcheck: true, ports: []string{"29092"}},
		{name: "kafka-init", oneShot: true, dependsOn: map[string]string{"kafka": healthy}},
		{name: "migrate", outflow: true, oneShot: true, dependsOn: map[string]string{"postgres": healthy}},
		{name: "featureserver", outflow: true, dependsOn: map[string]string{"kafka-init": completed}, ports: []string{"8090"}},
		{
			name: "outflow", outflow: true,
			dependsOn: map[string]string{
				"migrate": completed, "kafka": healthy, "kafka-init": completed, "featureserver": started,
				"jaeger": started,
			},
			ports: []string{"8080", "9090"},
			// serve's defaults: --drain-timeout 10s, then --shutdown-timeout 30s.
			minStop: 40 * time.Second,
		},
		{name: "producer", outflow: true, dependsOn: map[string]string{"kafka-init": completed}},
		{name: "jaeger", ports: []string{"16686", "4318"}},
	}

	var want []string
	for _, tt := range tests {
		want = append(want, tt.name)
	}
	var got []string
	for name := range f.Services {
		got = append(got, name)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("services = %v, want %v (a new service needs a row here)", got, want)
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, ok := f.Services[tt.name]
			if !ok {
				t.Fatalf("no service %q", tt.name)
			}
			if tt.outflow {
				if s.Image != outflowImage || s.Build == nil || s.Build.Context != "." ||
					(s.Build.Dockerfile != "" && s.Build.Dockerfile != "Dockerfile") {
					t.Errorf("image %q, build %+v; want image %q built from ./Dockerfile", s.Image, s.Build, outflowImage)
				}
				if s.PullPolicy != "build" {
					t.Errorf("pull_policy = %q, want build: the image is never pulled", s.PullPolicy)
				}
				if len(s.Entrypoint) > 0 {
					t.Errorf("entrypoint = %q, want the Dockerfile's /outflow", s.Entrypoint)
				}
			} else if s.Image == "" || s.Build != nil {
				t.Errorf("image %q, build %+v; want a published image", s.Image, s.Build)
			}
			if got := s.hasHealthcheck(); got != tt.healthcheck {
				t.Errorf("has a healthcheck: %v, want %v", got, tt.healthcheck)
			}
			if tt.oneShot && !s.isOneShot() {
				t.Errorf("restart = %q; a one-shot must not restart", s.Restart)
			}
			if !tt.oneShot && s.Restart != "unless-stopped" {
				t.Errorf("restart = %q, want unless-stopped", s.Restart)
			}

			deps := map[string]string{}
			for name, d := range s.DependsOn {
				deps[name] = d.Condition
			}
			if tt.dependsOn == nil {
				tt.dependsOn = map[string]string{}
			}
			if fmt.Sprint(deps) != fmt.Sprint(tt.dependsOn) { // Sprint sorts map keys
				t.Errorf("depends_on = %v, want %v", deps, tt.dependsOn)
			}

			var ports []string
			for _, p := range s.Ports {
				// [host-ip:][host-port:]container-port[/protocol]
				p, _, _ = strings.Cut(p, "/")
				ports = append(ports, p[strings.LastIndex(p, ":")+1:])
			}
			slices.Sort(ports)
			slices.Sort(tt.ports)
			if !slices.Equal(ports, tt.ports) {
				t.Errorf("published container ports = %v, want %v", ports, tt.ports)
			}

			if tt.minStop > 0 {
				d, err := time.ParseDuration(s.StopGracePeriod)
				if err != nil || d < tt.minStop {
					t.Errorf("stop_grace_period = %q, want at least %v", s.StopGracePeriod, tt.minStop)
				}
			}
		})
	}
}

// TestComposeDependencies checks that every condition in depends_on can be
// met: Compose refuses to start a service that waits for a dependency to be
// healthy when that dependency has no healthcheck, and waits forever for a
// restarting service to complete.
func TestComposeDependencies(t *testing.T) {
	t.Parallel()
	f, _ := loadCompose(t)
	for name, s := range f.Services {
		for dep, d := range s.DependsOn {
			target, ok := f.Services[dep]
			switch {
			case !ok:
				t.Errorf("%s depends on %s, which is no service", name, dep)
			case d.Condition == "service_healthy" && !target.hasHealthcheck():
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			case d.Condition == "service_completed_successfully" && !target.isOneShot():
				t.Errorf("%s waits for %s to complete, which restarts (restart: %s)", name, dep, target.Restart)
			case d.Condition != "service_healthy" && d.Condition != "service_completed_successfully" &&
				d.Condition != "service_started":
				t.Errorf("%s depends on %s with condition %q", name, dep, d.Condition)
			}
		}
	}
}

// TestComposeCommandLines runs every outflow command line of
// docker-compose.yml through the real CLI: each outflow service's command with
// its OUTFLOW_* environment, and each `docker compose run … outflow …` the
// file's comments teach.
func TestComposeCommandLines(t *testing.T) {
	t.Parallel()
	f, text := loadCompose(t)
	type commandLine struct {
		name string
		args []string
		env  map[string]string
		// ownEnv: env is the command's own, so each variable must name one of
		// its flags. Otherwise the command reads only those that do.
		ownEnv bool
	}
	var lines []commandLine
	for name, s := range f.Services {
		if s.isOutflow() {
			lines = append(lines, commandLine{"service " + name, s.Command, s.Environment, true})
		}
	}
	// A documented run gets the environment of the service it names, made
	// for the service's own command.
	documented := regexp.MustCompile(`docker compose run ((?:-\S+ )*)(\S+) ([^)|;&>\n]+)`)
	for _, m := range documented.FindAllStringSubmatch(text, -1) {
		s, ok := f.Services[m[2]]
		if !ok || !s.isOutflow() {
			t.Errorf("%q runs service %q, which is no outflow service", m[0], m[2])
			continue
		}
		lines = append(lines, commandLine{"documented " + strings.TrimSpace(m[3]), strings.Fields(m[3]), s.Environment, false})
	}
	if len(lines) == 0 {
		t.Fatal("no outflow command lines found")
	}
	slices.SortFunc(lines, func(a, b commandLine) int { return strings.Compare(a.name, b.name) })

	for _, tt := range lines {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkCommandLine(t, tt.args, tt.env, tt.ownEnv)
		})
	}
}

// helpSentinel follows every --help the tests insert. Were --help taken as
// the value of the flag before it, the parser reaches this unknown flag and
// fails with a usage error, so such a try never runs the command.
const helpSentinel = "--compose-test-sentinel"

// checkCommandLine checks that the CLI accepts args (a command line without
// the binary's name) with the OUTFLOW_* variables of env. With ownEnv, every
// variable of env must name a flag of the command.
//
// Flags are parsed in order and --help ends the parse with the flag set's
// usage and exit 0, so a --help where the flags end proves that every flag
// before it exists and has a valid value. Where they end depends on which
// flags are boolean, so each place they could end is tried in turn, earliest
// first; the first that prints a flag set's usage is it. (The earlier places
// were values of flags, and helpSentinel turned those tries into usage errors.)
// The variables are checked the same way, as the flags they stand for. Any
// positional arguments after the flags are checked by running the command in
// full with a cancelled context: it gets past every check of its arguments and
// stops at its first use of the context.
func checkCommandLine(t *testing.T, args []string, env map[string]string, ownEnv bool) {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("no command: the image's default would run")
	}
	for _, v := range slices.Concat(args, slices.Collect(maps.Values(env))) {
		if strings.Contains(v, "$") {
			t.Fatalf("%q: Compose would interpolate it, and these tests do not", v)
		}
	}

	end, usage := -1, ""
	var failure string
	for i := 1; i <= len(args); i++ {
		if i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
			continue
		}
		code, stdout, stderr := runCLI(args[:i], []string{"--help", helpSentinel}, args[i:])
		if code == 0 && strings.Contains(stdout, "\nFlags:\n") {
			end, usage = i, stdout
			break
		}
		failure = fmt.Sprintf("exit %d\n%s%s", code, stdout, stderr)
	}
	if end < 0 {
		t.Fatalf("outflow %s: not accepted:\n%s", strings.Join(args, " "), failure)
	}

	// The variables, as flags: parseFlags sets a variable's flag with the
	// same flag.Value.Set a --name=value on the command line goes through.
	flagOfEnv := map[string]string{}
	for _, m := range regexp.MustCompile(`--([a-z0-9-]+) \(env (OUTFLOW_[A-Z0-9_]+)\)`).FindAllStringSubmatch(usage, -1) {
		flagOfEnv[m[2]] = m[1]
	}
	var envFlags []string
	for _, key := range slices.Sorted(maps.Keys(env)) {
		name, ok := flagOfEnv[key]
		if !ok && args[0] == "serve" && slices.Contains(otelVariables(), key) {
			continue // read by the OpenTelemetry SDK, not a flag (see --otel)
		}
		if !ok {
			if ownEnv {
				t.Errorf("environment %s names no flag of this command (its usage:\n%s)", key, usage)
			}
			continue
		}
		envFlags = append(envFlags, "--"+name+"="+env[key])
	}
	if code, stdout, stderr := runCLI(args[:end], envFlags, []string{"--help", helpSentinel}, args[end:]); code != 0 {
		t.Errorf("the environment as flags is not accepted: exit %d\n%s%s", code, stdout, stderr)
	}

	if end == len(args) {
		return
	}
	i := slices.IndexFunc(commands(), func(c command) bool { return c.name == args[0] })
	if i < 0 {
		t.Fatalf("no command %q", args[0])
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var stdout, stderr bytes.Buffer
	cli := &environment{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }}
	if err := commands()[i].run(ctx, cli, args[1:]); !errors.Is(err, context.Canceled) {
		t.Errorf("outflow %s with a cancelled context: %v, want it to stop at context.Canceled; its arguments are not accepted\n%s%s",
			strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
}

// runCLI runs the concatenated arguments through run, as the binary would.
func runCLI(args ...[]string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(context.Background(), slices.Concat(args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// dockerInstruction is one instruction of a Dockerfile, continuation lines
// joined.
type dockerInstruction struct {
	stage int // index of its FROM
	cmd   string
	args  string
}

func parseDockerfile(text string) []dockerInstruction {
	var out []dockerInstruction
	stage := -1
	var cur strings.Builder
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue // comments may sit inside a continuation too
		}
		if more, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(more + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, dockerInstruction{stage: stage, cmd: cmd, args: strings.TrimSpace(args)})
	}
	return out
}

// TestDockerfile checks the image's shape: a build stage on the Go of go.mod
// producing a static binary, and a runtime stage that runs it as a non-root
// user.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	text, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	_ = &version // -ldflags sets main.version: keep the variable's name in step

	ins := parseDockerfile(string(text))
	var froms []string
	for _, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, in.args)
		}
	}
	if len(froms) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(froms))
	}
	final := len(froms) - 1
	if want := "golang:" + string(goVersion[1]); !strings.HasPrefix(froms[0], want) {
		t.Errorf("build stage FROM %s, want %s… (go.mod's go version)", froms[0], want)
	}

	var build, user, entrypoint string
	var exposed []string
	copiesBinary := false
	for _, in := range ins {
		switch {
		case in.stage < final && in.cmd == "RUN" && strings.Contains(in.args, "go build"):
			build = in.args
		case in.stage == final && in.cmd == "USER":
			user = in.args
		case in.stage == final && in.cmd == "ENTRYPOINT":
			entrypoint = in.args
		case in.stage == final && in.cmd == "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case in.stage == final && in.cmd == "COPY" && strings.HasPrefix(in.args, "--from=") &&
			strings.HasSuffix(in.args, " /outflow"):
			copiesBinary = true
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=", "./cmd/outflow"} {
		if !strings.Contains(build, want) {
			t.Errorf("the go build of the build stage lacks %s:\n%s", want, build)
		}
	}
	if !copiesBinary {
		t.Error("the runtime stage copies no /outflow from an earlier stage")
	}
	nonrootBase := strings.HasSuffix(froms[final], ":nonroot")
	if u, _, _ := strings.Cut(user, ":"); (user == "" && !nonrootBase) || u == "root" || u == "0" {
		t.Errorf("runtime stage FROM %s, USER %q: want a non-root user", froms[final], user)
	}
	var ep []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || !slices.Equal(ep, []string{"/outflow"}) {
		t.Errorf("ENTRYPOINT %s, want [\"/outflow\"] (exec form, so SIGTERM reaches outflow)", entrypoint)
	}
	slices.Sort(exposed)
	if want := []string{"8080", "8090", "9090"}; !slices.Equal(exposed, want) {
		t.Errorf("EXPOSE %v, want %v", exposed, want)
	}
}
