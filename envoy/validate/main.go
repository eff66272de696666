// Command validate checks envoy/envoy.yaml against Envoy's own configuration schema (the
// protobuf types and validation rules of go-control-plane, generated from Envoy's API), since
// Envoy itself cannot run on the build machine. It also checks that every service the gRPC-JSON
// transcoder names is in the descriptor set it reads.
//
//	go run . ../envoy.yaml ../mlmesh.binpb
package main

import (
	"fmt"
	"os"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	transcoder "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_json_transcoder/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"sigs.k8s.io/yaml"

	// Every extension envoy.yaml uses, so their typed_config can be decoded and validated.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_web/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: validate <envoy.yaml> <descriptor set>")
		os.Exit(2)
	}
	if err := validate(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	fmt.Printf("%s: valid Envoy bootstrap configuration\n", os.Args[1])
}

func validate(configPath, descriptorPath string) error {
	text, err := os.ReadFile(configPath)
	if err != nil {
		return err
	}
	jsonText, err := yaml.YAMLToJSON(text)
	if err != nil {
		return fmt.Errorf("not YAML: %w", err)
	}
	var config bootstrap.Bootstrap
	// DiscardUnknown is off: a misspelt field is an error, as it is for Envoy.
	if err := (protojson.UnmarshalOptions{}).Unmarshal(jsonText, &config); err != nil {
		return fmt.Errorf("does not match Envoy's schema: %w", err)
	}
	if err := config.ValidateAll(); err != nil {
		return fmt.Errorf("breaks Envoy's validation rules: %w", err)
	}
	return checkTranscoderServices(&config, descriptorPath)
}

// checkTranscoderServices finds each gRPC-JSON transcoder filter and checks its services exist.
func checkTranscoderServices(config *bootstrap.Bootstrap, descriptorPath string) error {
	bytes, err := os.ReadFile(descriptorPath)
	if err != nil {
		return err
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(bytes, &set); err != nil {
		return fmt.Errorf("%s is not a descriptor set: %w", descriptorPath, err)
	}
	known := map[string]bool{}
	for _, file := range set.File {
		for _, service := range file.Service {
			known[file.GetPackage()+"."+service.GetName()] = true
		}
	}
	found := false
	for _, listener := range config.GetStaticResources().GetListeners() {
		for _, chain := range listener.GetFilterChains() {
			for _, filter := range chain.GetFilters() {
				manager := &hcm.HttpConnectionManager{}
				if filter.GetTypedConfig().UnmarshalTo(manager) != nil {
					continue
				}
				for _, httpFilter := range manager.GetHttpFilters() {
					settings := &transcoder.GrpcJsonTranscoder{}
					if httpFilter.GetTypedConfig().UnmarshalTo(settings) != nil {
						continue
					}
					found = true
					for _, service := range settings.GetServices() {
						if !known[service] {
							return fmt.Errorf("transcoder service %q is not in %s", service, descriptorPath)
						}
					}
				}
			}
		}
	}
	if !found {
		return fmt.Errorf("no grpc_json_transcoder filter found")
	}
	return nil
}
