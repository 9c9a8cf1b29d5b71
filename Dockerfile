# The kube-dss image: one static-ish binary (operator, emulator, jobs CLI, CRD printer) on distroless.
#   docker build -t ghcr.io/kube-dss/kube-dss:0.1.0 .
# The chart runs it as `kube-dss controller` and, for the sandbox, `kube-dss emulator`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so a source-only change reuses the cached dependency layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY . .
# touch: make cargo rebuild the crate itself over the placeholder build above.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
 && cp target/release/kube-dss /kube-dss

# distroless/cc: glibc and libgcc for the Rust binary, no shell, no package manager; :nonroot is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /kube-dss /kube-dss
USER 65532:65532
ENTRYPOINT ["/kube-dss"]
CMD ["controller"]
