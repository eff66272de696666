// Command check validates the Kubernetes objects `helm template` renders from the mlmesh chart,
// offline (no cluster here): each object is decoded strictly into its Go type from k8s.io/api
// (or, for the Prometheus Operator's and cert-manager's custom resources, from the packages their
// CRD schemas are generated from), so a misspelt or misplaced field is an error naming the
// object and the field's path, as the API server's strict field validation would report it.
// Then the chart's own rules: images tagged (never "latest"), every container with resource
// requests and limits and startup, liveness and readiness probes, pods that run as non-root on a
// read-only root filesystem, and selectors that select what they are meant to.
//
//	helm template mlmesh ../mlmesh > rendered.yaml && go run . rendered.yaml
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kinds maps apiVersion/kind to a new object of its Go type; anything else is refused.
var kinds = map[string]func() any{
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                     func() any { return &appsv1.StatefulSet{} },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
	"cert-manager.io/v1/Certificate":          func() any { return &certmanagerv1.Certificate{} },
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: check <rendered.yaml> (the output of helm template)")
		os.Exit(2)
	}
	input, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	objects, problems := decodeAll(input)
	problems = append(problems, checkRules(objects)...)
	if len(problems) > 0 {
		sort.Strings(problems)
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, p)
		}
		fmt.Fprintf(os.Stderr, "%d problem(s) in %d objects\n", len(problems), len(objects))
		os.Exit(1)
	}
	fmt.Printf("%d objects: valid\n", len(objects))
}

// object is one decoded document: its name for messages, and its typed value.
type object struct {
	name  string // Kind/name
	value any
}

// decodeAll splits the YAML stream into documents and decodes each strictly.
func decodeAll(input []byte) ([]object, []string) {
	var objects []object
	var problems []string
	for i, doc := range bytes.Split(input, []byte("\n---")) {
		jsonDoc, err := yaml.YAMLToJSON(doc)
		if err != nil {
			problems = append(problems, fmt.Sprintf("document %d: not YAML: %v", i, err))
			continue
		}
		if string(jsonDoc) == "null" {
			continue // an empty document (a template that rendered nothing)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(jsonDoc, &head); err != nil {
			problems = append(problems, fmt.Sprintf("document %d: %v", i, err))
			continue
		}
		name := fmt.Sprintf("%s/%s", head.Kind, head.Metadata.Name)
		newObject, known := kinds[head.APIVersion+"/"+head.Kind]
		if !known {
			problems = append(problems, fmt.Sprintf("%s: apiVersion %q kind %q is not one the chart may render", name, head.APIVersion, head.Kind))
			continue
		}
		if head.Metadata.Name == "" {
			problems = append(problems, fmt.Sprintf("%s: metadata.name is empty", name))
		}
		value := newObject()
		strict, err := sigsjson.UnmarshalStrict(jsonDoc, value, sigsjson.DisallowUnknownFields)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		for _, e := range strict {
			problems = append(problems, fmt.Sprintf("%s: %v", name, e))
		}
		objects = append(objects, object{name, value})
	}
	return objects, problems
}

// checkRules applies the chart's own rules to the decoded objects.
func checkRules(objects []object) []string {
	var problems []string
	var podLabels []labels.Set // every workload's pod template labels
	workloads := map[string]bool{}
	for _, o := range objects {
		var template *corev1.PodTemplateSpec
		var selector map[string]string
		switch v := o.value.(type) {
		case *appsv1.Deployment:
			template, selector = &v.Spec.Template, v.Spec.Selector.MatchLabels
			workloads["Deployment/"+v.Name] = true
		case *appsv1.StatefulSet:
			template, selector = &v.Spec.Template, v.Spec.Selector.MatchLabels
			workloads["StatefulSet/"+v.Name] = true
		default:
			continue
		}
		if len(selector) == 0 || !labels.SelectorFromSet(selector).Matches(labels.Set(template.Labels)) {
			problems = append(problems, fmt.Sprintf("%s: spec.selector does not select its own pod template's labels", o.name))
		}
		podLabels = append(podLabels, labels.Set(template.Labels))
		problems = append(problems, checkPod(o.name, &template.Spec)...)
	}
	selects := func(selector map[string]string) bool {
		for _, set := range podLabels {
			if len(selector) > 0 && labels.SelectorFromSet(selector).Matches(set) {
				return true
			}
		}
		return false
	}
	for _, o := range objects {
		switch v := o.value.(type) {
		case *corev1.Service:
			if !selects(v.Spec.Selector) {
				problems = append(problems, fmt.Sprintf("%s: spec.selector selects no pod the chart runs", o.name))
			}
		case *policyv1.PodDisruptionBudget:
			if v.Spec.Selector == nil || !selects(v.Spec.Selector.MatchLabels) {
				problems = append(problems, fmt.Sprintf("%s: spec.selector selects no pod the chart runs", o.name))
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			target := v.Spec.ScaleTargetRef.Kind + "/" + v.Spec.ScaleTargetRef.Name
			if !workloads[target] {
				problems = append(problems, fmt.Sprintf("%s: spec.scaleTargetRef names %s, which the chart does not render", o.name, target))
			}
		}
	}
	return problems
}

// checkPod: tagged images, resources and probes on every container, a locked-down security context.
func checkPod(owner string, pod *corev1.PodSpec) []string {
	var problems []string
	add := func(field, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: %s: %s", owner, field, fmt.Sprintf(format, args...)))
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		add("spec.template.spec.securityContext.runAsNonRoot", "must be true")
	}
	for i, c := range pod.Containers {
		at := fmt.Sprintf("spec.template.spec.containers[%d] (%s)", i, c.Name)
		if tag := imageTag(c.Image); tag == "" || tag == "latest" {
			add(at+".image", "%q must name a version (a tag other than latest, or a digest)", c.Image)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				add(at+".resources.requests", "no %s request", r)
			}
			if _, ok := c.Resources.Limits[r]; !ok {
				add(at+".resources.limits", "no %s limit", r)
			}
		}
		if c.StartupProbe == nil {
			add(at+".startupProbe", "missing")
		}
		if c.LivenessProbe == nil {
			add(at+".livenessProbe", "missing")
		}
		if c.ReadinessProbe == nil {
			add(at+".readinessProbe", "missing")
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			add(at+".securityContext.readOnlyRootFilesystem", "must be true")
		}
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			add(at+".securityContext.allowPrivilegeEscalation", "must be false")
		}
	}
	return problems
}

// imageTag is the tag of an image reference ("" when it has none); a digest counts as a tag.
func imageTag(image string) string {
	if at := strings.LastIndex(image, "@"); at >= 0 {
		return image[at+1:]
	}
	name := image[strings.LastIndex(image, "/")+1:]
	if colon := strings.LastIndex(name, ":"); colon >= 0 {
		return name[colon+1:]
	}
	return ""
}
