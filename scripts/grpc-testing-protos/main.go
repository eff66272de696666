// Writes the .proto files of gRPC's interop test service (grpc.testing.TestService and the
// messages it uses) as grpc-go ships them: grpc-go carries their descriptors, not their source,
// so they are printed from the descriptors compiled into google.golang.org/grpc/interop/grpc_testing
// (the same contract its interop client speaks; comments are not in descriptors).
//
//	go run . <output directory>
package main

import (
	"fmt"
	"os"

	"github.com/jhump/protoreflect/desc"
	"github.com/jhump/protoreflect/desc/protoprint"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run . <output directory>")
		os.Exit(2)
	}
	file, err := desc.WrapFile(testpb.File_grpc_testing_test_proto)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	files := []*desc.FileDescriptor{file}
	files = append(files, file.GetDependencies()...)
	printer := &protoprint.Printer{}
	if err := printer.PrintProtosToFileSystem(files, os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
