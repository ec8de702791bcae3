package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

// checkCompose loads file as docker compose does (schema validation,
// interpolation, normalisation), then checks that what it names on disk
// exists: build contexts and their Dockerfiles, bind-mount sources,
// secret files.
func checkCompose(p *problems, file string) {
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithName("deploylint"),
	)
	if err != nil {
		p.add(file, "%v", err)
		return
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		p.add(file, "%v", err)
		return
	}
	exists := func(where, path string) {
		if _, err := os.Stat(path); err != nil {
			p.add(file, "%s: %v", where, err)
		}
	}
	for name, s := range project.Services {
		if s.Build != nil {
			exists("service "+name+" build context", s.Build.Context)
			dockerfile := s.Build.Dockerfile
			if dockerfile == "" {
				dockerfile = "Dockerfile"
			}
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(s.Build.Context, dockerfile)
			}
			exists("service "+name+" Dockerfile", dockerfile)
		}
		for _, v := range s.Volumes {
			if v.Type == "bind" {
				exists("service "+name+" bind mount", v.Source)
				if !v.ReadOnly {
					p.add(file, "service %s: mount %s read-only", name, v.Target)
				}
			}
		}
		for _, ref := range s.Secrets {
			if _, ok := project.Secrets[ref.Source]; !ok {
				p.add(file, "service %s: no top-level secret %q", name, ref.Source)
			}
		}
	}
	for name, sec := range project.Secrets {
		if sec.File != "" {
			exists("secret "+name, sec.File)
		}
	}
}
