package main

import (
	"fmt"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// decoder decodes strictly (unknown or duplicate fields are errors) every
// built-in Kubernetes kind and the prometheus-operator's.
func decoder() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// rendered is what one kustomization builds, by kind.
type rendered struct {
	deployments    []*appsv1.Deployment
	services       []*corev1.Service
	configMaps     map[string]bool
	serviceMonitor []*monitoringv1.ServiceMonitor
}

func checkKube(p *problems, dir string) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		p.add(dir, "kustomize build: %v", err)
		return
	}
	dec := decoder()
	r := rendered{configMaps: map[string]bool{}}
	for _, res := range resources.Resources() {
		where := fmt.Sprintf("%s: %s/%s", dir, res.GetKind(), res.GetName())
		y, err := res.AsYAML()
		if err != nil {
			p.add(where, "%v", err)
			continue
		}
		obj, _, err := dec.Decode(y, nil, nil)
		if err != nil {
			p.add(where, "%v", err)
			continue
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			r.deployments = append(r.deployments, o)
		case *corev1.Service:
			r.services = append(r.services, o)
		case *corev1.ConfigMap:
			r.configMaps[o.Name] = true
		case *monitoringv1.ServiceMonitor:
			r.serviceMonitor = append(r.serviceMonitor, o)
		}
	}
	for _, d := range r.deployments {
		checkDeployment(p, dir+": Deployment/"+d.Name, d, r.configMaps)
	}
	for _, s := range r.services {
		checkService(p, dir+": Service/"+s.Name, s, r.deployments)
	}
	for _, m := range r.serviceMonitor {
		checkServiceMonitor(p, dir+": ServiceMonitor/"+m.Name, m, r.services)
	}
}

// allContainers are the pod's init containers (native sidecars among
// them) and its containers.
func allContainers(spec *corev1.PodSpec) []corev1.Container {
	return append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
}

func checkDeployment(p *problems, where string, d *appsv1.Deployment, configMaps map[string]bool) {
	if d.Spec.Selector == nil {
		p.add(where, "no spec.selector")
	} else {
		sel, err := metav1LabelSelector(d)
		if err != nil {
			p.add(where, "spec.selector: %v", err)
		} else if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			p.add(where, "spec.selector does not match the pod template's labels")
		}
	}
	spec := &d.Spec.Template.Spec
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
		if v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] {
			p.add(where, "volume %s: ConfigMap %q is not among the rendered objects", v.Name, v.ConfigMap.Name)
		}
	}
	podNonRoot := spec.SecurityContext != nil && spec.SecurityContext.RunAsNonRoot != nil && *spec.SecurityContext.RunAsNonRoot
	for _, c := range allContainers(spec) {
		cw := where + ": container " + c.Name
		if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
			p.add(cw, "image %q: name a version tag, not latest", c.Image)
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				p.add(cw, "volumeMount %s: no such volume", m.Name)
			}
			if !m.ReadOnly {
				p.add(cw, "volumeMount %s: mount it readOnly", m.Name)
			}
		}
		ports := map[string]bool{}
		for _, port := range c.Ports {
			ports[port.Name] = true
		}
		probes := []struct {
			name  string
			probe *corev1.Probe
		}{{"startupProbe", c.StartupProbe}, {"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}}
		for _, pr := range probes {
			name, probe := pr.name, pr.probe
			if probe != nil && probe.HTTPGet != nil && probe.HTTPGet.Port.Type == intstr.String && !ports[probe.HTTPGet.Port.StrVal] {
				p.add(cw, "%s: port %q is not a port of the container", name, probe.HTTPGet.Port.StrVal)
			}
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
			p.add(cw, "set resources: cpu and memory requests, a memory limit")
		}
		sc := c.SecurityContext
		if sc == nil {
			p.add(cw, "no securityContext")
			continue
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			p.add(cw, "securityContext.readOnlyRootFilesystem must be true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			p.add(cw, "securityContext.allowPrivilegeEscalation must be false")
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			p.add(cw, "securityContext.capabilities.drop must be [ALL]")
		}
		if !podNonRoot && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
			p.add(cw, "runAsNonRoot must be true (pod or container)")
		}
	}
}

func checkService(p *problems, where string, s *corev1.Service, deployments []*appsv1.Deployment) {
	if len(s.Spec.Selector) == 0 {
		p.add(where, "no selector")
		return
	}
	var pods []*corev1.PodTemplateSpec
	for _, d := range deployments {
		if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			pods = append(pods, &d.Spec.Template)
		}
	}
	if len(pods) == 0 {
		p.add(where, "selector %v matches no pod template", s.Spec.Selector)
		return
	}
	for _, port := range s.Spec.Ports {
		if port.TargetPort.Type != intstr.String {
			continue
		}
		found := false
		for _, pod := range pods {
			for _, c := range allContainers(&pod.Spec) {
				for _, cp := range c.Ports {
					found = found || cp.Name == port.TargetPort.StrVal
				}
			}
		}
		if !found {
			p.add(where, "port %s: targetPort %q is no container port of the selected pods", port.Name, port.TargetPort.StrVal)
		}
	}
}

func checkServiceMonitor(p *problems, where string, m *monitoringv1.ServiceMonitor, services []*corev1.Service) {
	sel, err := metav1SelectorOf(&m.Spec.Selector)
	if err != nil {
		p.add(where, "selector: %v", err)
		return
	}
	var matched []*corev1.Service
	for _, s := range services {
		if sel.Matches(labels.Set(s.Labels)) {
			matched = append(matched, s)
		}
	}
	if len(matched) == 0 {
		p.add(where, "selector matches no Service")
		return
	}
	for _, e := range m.Spec.Endpoints {
		found := false
		for _, s := range matched {
			for _, sp := range s.Spec.Ports {
				found = found || sp.Name == e.Port
			}
		}
		if !found {
			p.add(where, "endpoint port %q is no port of the selected Services", e.Port)
		}
	}
}
