# frozen_string_literal: true

# Offline tests of the ikemesh BOSH release: they render the meshd job's templates with
# our own renderer (tests/renderer.rb, BOSH's template semantics), then run what BOSH
# would run on a VM: the rendered pre-start issues the node certificate with meshctl from
# a CA made here, and `meshd --check-config` must accept the rendered configuration.
# /var/vcap is a bind mount in a private mount namespace (unshare --mount), so the
# absolute paths in the rendered files resolve and the host is left alone; a vcap user
# is added the same way (bind-mounted /etc/passwd and /etc/group) when the host has none.
# No network: rendering, file operations and `meshd --check-config` only.
#
# Run by packaging/bosh/test (as root). IKEMESH_BIN_DIR holds meshd and meshctl.

require_relative "renderer"
require "etc"
require "fileutils"
require "open3"
require "openssl"
require "securerandom"
require "tmpdir"
require "tomlrb"
require "yaml"

module IkemeshBoshTest
  RELEASE_DIR = File.expand_path("..", __dir__)
  JOB_DIR = File.join(RELEASE_DIR, "jobs", "meshd")
  FIXTURES = File.join(__dir__, "fixtures")
  BIN_DIR = ENV.fetch("IKEMESH_BIN_DIR") { File.expand_path("../../../target/debug", __dir__) }
  VCAP = "/var/vcap"

  class << self
    attr_accessor :work, :vars, :package_dir, :made_vcap_mountpoint, :vcap_uid
  end

  def self.run!(*cmd, **opts)
    out, err, status = Open3.capture3(*cmd, **opts)
    raise "#{cmd.join(" ")} failed (#{status.exitstatus}):\n#{out}#{err}" unless status.success?

    out
  end

  # Everything the examples share: two CAs made with `meshctl ca init` and one made as
  # CredHub makes them, an SPA secret, and the ikemesh package compiled by its own
  # packaging script.
  def self.setup
    %w[meshd meshctl].each do |b|
      path = File.join(BIN_DIR, b)
      raise "#{path} is missing: build it (cargo build -p mesh --bins) or set IKEMESH_BIN_DIR" unless File.executable?(path)
    end
    self.work = Dir.mktmpdir("ikemesh-bosh-test-")
    File.chmod(0o755, work)
    meshctl = File.join(BIN_DIR, "meshctl")
    cas = {}
    { "mesh_ca" => "test", "mesh_ca_next" => "test-next" }.each do |var, mesh|
      dir = File.join(work, var)
      run!(meshctl, "ca", "init", "--dir", dir, "--mesh", mesh)
      cas[var] = {
        "certificate" => File.read(File.join(dir, "ca-1.pem")),
        "private_key" => File.read(File.join(dir, "ca-1.key")),
      }
    end
    cas["credhub_ca"] = credhub_like_ca
    self.vars = {
      "mesh_ca" => cas["mesh_ca"],
      "credhub_ca" => cas["credhub_ca"],
      "mesh_ca_next" => cas["mesh_ca_next"],
      "mesh_ca_bundle" => cas["mesh_ca"]["certificate"] + cas["mesh_ca_next"]["certificate"],
      "spa_secret" => SecureRandom.alphanumeric(40),
    }
    # The names manifests/example.yml uses: a CA as BOSH variables of type certificate
    # generate it.
    vars["ikemesh_ca"] = vars["credhub_ca"]
    vars["ikemesh_spa_secret"] = vars["spa_secret"]

    # The package, as the director compiles it: the blobs in the working directory,
    # BOSH_INSTALL_TARGET empty.
    compile = File.join(work, "compile")
    FileUtils.mkdir_p(File.join(compile, "ikemesh"))
    %w[meshd meshctl].each do |b|
      File.symlink(File.join(BIN_DIR, b), File.join(compile, "ikemesh", b))
    end
    self.package_dir = File.join(work, "package")
    FileUtils.mkdir_p(package_dir)
    run!({ "BOSH_INSTALL_TARGET" => package_dir }, "bash", "-e",
         File.join(RELEASE_DIR, "packages", "ikemesh", "packaging"), chdir: compile)

    # A mount point for the fake /var/vcap (removed again at the end if we made it).
    unless File.directory?(VCAP)
      begin
        Dir.mkdir(VCAP)
        self.made_vcap_mountpoint = true
      rescue Errno::EEXIST
        nil
      end
    end
    self.vcap_uid = (Etc.getpwnam("vcap").uid rescue free_id)
  end

  # A CA as CredHub (or the director's config server) generates for a variable of type
  # certificate with is_ca: true: RSA 2048, the key as PKCS#1 (BEGIN RSA PRIVATE KEY).
  def self.credhub_like_ca
    key = OpenSSL::PKey::RSA.new(2048)
    cert = OpenSSL::X509::Certificate.new
    cert.version = 2
    cert.serial = OpenSSL::BN.rand(64)
    cert.subject = cert.issuer = OpenSSL::X509::Name.parse("/CN=ikemesh mesh CA")
    cert.public_key = key.public_key
    cert.not_before = Time.now - 60
    cert.not_after = Time.now + (365 * 86_400)
    ef = OpenSSL::X509::ExtensionFactory.new(cert, cert)
    cert.add_extension(ef.create_extension("basicConstraints", "CA:TRUE", true))
    cert.add_extension(ef.create_extension("keyUsage", "keyCertSign, cRLSign", true))
    cert.add_extension(ef.create_extension("subjectKeyIdentifier", "hash", false))
    cert.add_extension(ef.create_extension("authorityKeyIdentifier", "keyid:always", false))
    cert.sign(key, OpenSSL::Digest.new("SHA256"))
    pem = key.to_pem
    raise "expected a PKCS#1 key, got #{pem.lines.first}" unless pem.start_with?("-----BEGIN RSA PRIVATE KEY-----")

    { "certificate" => cert.to_pem, "private_key" => pem }
  end

  def self.free_id
    (2000..60_000).find do |id|
      (Etc.getpwuid(id) rescue nil).nil? && (Etc.getgrgid(id) rescue nil).nil?
    end
  end

  def self.teardown
    FileUtils.rm_rf(work) if work
    Dir.rmdir(VCAP) if made_vcap_mountpoint && Dir.exist?(VCAP) && Dir.empty?(VCAP)
  rescue SystemCallError
    nil
  end

  # ((name)) and ((name.key)) placeholders, as the director interpolates variables.
  def self.interpolate(value)
    case value
    when Hash then value.transform_values { |v| interpolate(v) }
    when Array then value.map { |v| interpolate(v) }
    when String
      m = value.match(/\A\(\((.+)\)\)\z/)
      return value unless m

      m[1].split(".").reduce(vars) do |node, key|
        node.is_a?(Hash) && node.key?(key) ? node[key] : raise("unknown variable ((#{m[1]}))")
      end
    else value
    end
  end

  module Helpers
    def renderer
      @renderer ||= BoshTemplateTest::Renderer.new(JOB_DIR)
    end

    def fixture(name)
      YAML.safe_load(File.read(File.join(FIXTURES, "#{name}.yml")))
    end

    # A copy of the fixture with a property set (value) or removed (:delete).
    def with_property(fx, dotted, value)
      fx = Marshal.load(Marshal.dump(fx))
      keys = dotted.split(".")
      last = keys.pop
      node = keys.reduce(fx["properties"]) { |h, k| h[k] ||= {} }
      value == :delete ? node.delete(last) : node[last] = value
      fx
    end

    def instance_spec(fx, index = fx.fetch("this"))
      i = fx.fetch("instances").fetch(index)
      {
        "deployment" => fx.fetch("deployment"),
        "name" => fx.fetch("instance_group"),
        "job" => { "name" => "meshd" },
        "id" => i["id"],
        "index" => i["index"],
        "az" => i["az"],
        "bootstrap" => i["bootstrap"],
        "address" => i["address"],
        "ip" => i["address"],
        "networks" => { "default" => { "ip" => i["address"], "default" => %w[dns gateway] } },
        "properties" => IkemeshBoshTest.interpolate(fx.fetch("properties")),
      }
    end

    def links(fx)
      instances = fx.fetch("instances").map do |i|
        { "name" => fx.fetch("instance_group"), "id" => i["id"], "index" => i["index"],
          "az" => i["az"], "address" => i["address"], "bootstrap" => i["bootstrap"] }
      end
      { "ikemesh" => { "instances" => instances, "properties" => {} } }
    end

    def render_all(fx, out_dir)
      renderer.render(instance_spec(fx), links(fx), out_dir)
    end

    def render_one(fx, template)
      renderer.render_template(template, instance_spec(fx), links(fx))
    end

    # Renders every template; returns the error (RenderError) the director would show.
    def render_error(fx)
      Dir.mktmpdir do |out|
        render_all(fx, out)
      end
      nil
    rescue BoshTemplateTest::RenderError => e
      e
    end

    # Renders the fixture, lays it out as a VM's /var/vcap, and runs the rendered
    # pre-start (`runs` times, as repeated deploys would), then `meshd --check-config`
    # as vcap (as bpm runs meshd) and as root. Returns what happened.
    def on_fake_vm(fx, runs: 1)
      root = Dir.mktmpdir("vm-", IkemeshBoshTest.work)
      vcap = File.join(root, "vcap")
      results = File.join(root, "results")
      FileUtils.mkdir_p([File.join(vcap, "jobs", "meshd"), File.join(vcap, "packages", "ikemesh"),
                         File.join(vcap, "data"), File.join(vcap, "sys", "run"),
                         File.join(vcap, "sys", "log", "meshd"), File.join(results, "stubs")])
      render_all(fx, File.join(vcap, "jobs", "meshd"))
      Dir.glob(File.join(vcap, "**", "")).each { |d| File.chmod(0o755, d) }
      File.chmod(0o755, root)

      # modprobe is not run for real (no module is loaded on the test host): a stub
      # records the calls and fails for esp6, as on a kernel without it.
      File.write(File.join(results, "stubs", "modprobe"), <<~SH)
        #!/bin/sh
        echo "$*" >> "#{results}/modprobe.calls"
        if [ "$1" = esp6 ]; then echo "modprobe: FATAL: Module esp6 not found" >&2; exit 1; fi
        exit 0
      SH
      File.chmod(0o755, File.join(results, "stubs", "modprobe"))

      script = File.join(results, "vm.sh")
      File.write(script, <<~SH)
        set -euo pipefail
        results=#{results}
        mount --bind #{vcap} /var/vcap
        mount --bind #{IkemeshBoshTest.package_dir} /var/vcap/packages/ikemesh
        mount -o remount,bind,ro /var/vcap/packages/ikemesh
        if ! id -u vcap >/dev/null 2>&1; then
          cp /etc/passwd "$results/passwd"
          cp /etc/group "$results/group"
          echo "vcap:x:#{IkemeshBoshTest.vcap_uid}:#{IkemeshBoshTest.vcap_uid}:vcap (test):/var/vcap:/bin/bash" >> "$results/passwd"
          echo "vcap:x:#{IkemeshBoshTest.vcap_uid}:" >> "$results/group"
          mount --bind "$results/passwd" /etc/passwd
          mount --bind "$results/group" /etc/group
        fi
        id -u vcap > "$results/vcap.uid"
        export PATH="$results/stubs:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for n in $(seq 1 #{runs}); do
          rc=0
          /var/vcap/jobs/meshd/bin/pre-start > "$results/pre-start.$n.out" 2> "$results/pre-start.$n.err" || rc=$?
          echo "$rc" > "$results/pre-start.$n.rc"
          if [ -f /var/vcap/data/meshd/node.pem ]; then cp /var/vcap/data/meshd/node.pem "$results/node.$n.pem"; fi
        done
        check() {
          local who=$1; shift
          local rc=0
          "$@" /var/vcap/packages/ikemesh/bin/meshd --check-config --config /var/vcap/jobs/meshd/config/meshd.toml \
            > "$results/check-$who.out" 2> "$results/check-$who.err" || rc=$?
          echo "$rc" > "$results/check-$who.rc"
        }
        check vcap setpriv --reuid=vcap --regid="$(id -g vcap)" --clear-groups --
        check root
        find /var/vcap/data/meshd /var/vcap/jobs/meshd/config -maxdepth 1 -printf '%m %U %G %p\\n' 2>/dev/null |
          sort > "$results/data.stat" || true
      SH
      out, err, status = Open3.capture3("unshare", "--mount", "--propagation", "private", "bash", script)
      raise "the fake VM script failed (#{status.exitstatus}):\n#{out}#{err}" unless status.success?

      read = ->(f) { File.exist?(File.join(results, f)) ? File.read(File.join(results, f)) : nil }
      step = lambda do |name|
        { rc: read.call("#{name}.rc")&.to_i, out: read.call("#{name}.out"), err: read.call("#{name}.err") }
      end
      {
        vcap: vcap,
        pre_start: (1..runs).map { |n| step.call("pre-start.#{n}") },
        certs: (1..runs).map { |n| read.call("node.#{n}.pem") },
        check_vcap: step.call("check-vcap"),
        check_root: step.call("check-root"),
        modprobe: read.call("modprobe.calls").to_s.split("\n"),
        vcap_uid: read.call("vcap.uid").to_i,
        data_stat: read.call("data.stat").to_s.split("\n").to_h do |l|
          mode, uid, gid, path = l.split(" ", 4)
          [path, { mode: mode, uid: uid.to_i, gid: gid.to_i }]
        end,
      }
    end

    def toml(fx)
      Tomlrb.parse(render_one(fx, "meshd.toml.erb"))
    end

    def cert_of(pem)
      OpenSSL::X509::Certificate.new(pem)
    end

    def san(cert)
      ext = cert.extensions.find { |e| e.oid == "subjectAltName" }
      ext ? ext.value.split(/,\s*/) : []
    end
  end
end

RSpec.configure do |c|
  c.include IkemeshBoshTest::Helpers
  c.before(:suite) { IkemeshBoshTest.setup }
  c.after(:suite) { IkemeshBoshTest.teardown }
end

T = IkemeshBoshTest

RSpec.describe "the renderer (BOSH template semantics)" do
  let(:job) do
    dir = Dir.mktmpdir("job-", T.work)
    FileUtils.mkdir_p(File.join(dir, "templates"))
    File.write(File.join(dir, "spec"), <<~YAML)
      name: j
      templates: {t.erb: config/t}
      properties:
        a.b: {description: nested with a default, default: 5}
        a.c: {description: no default}
        d: {description: false default, default: false}
    YAML
    dir
  end

  def render_text(job, text, props, links = {})
    File.write(File.join(job, "templates", "t.erb"), text)
    spec = { "id" => "x", "address" => "10.0.0.1", "properties" => props }
    BoshTemplateTest::Renderer.new(job).render_template("t.erb", spec, links)
  end

  it "takes the manifest's nested value, else the spec default; p(name, default) and p([names])" do
    expect(render_text(job, '<%= p("a.b") %>', {})).to eq("5")
    expect(render_text(job, '<%= p("a.b") %>', { "a" => { "b" => 7 } })).to eq("7")
    expect(render_text(job, '<%= p("a.c", "dflt") %>', {})).to eq("dflt")
    expect(render_text(job, '<%= p(["a.c", "a.b"]) %>', {})).to eq("5")
    expect(render_text(job, '<%= p("d").inspect %>', {})).to eq("false")
  end

  it "fails on a missing property without default, naming it, and hides undeclared ones" do
    expect { render_text(job, "x\n<%= p('a.c') %>", {}) }
      .to raise_error(BoshTemplateTest::RenderError,
                      %q{Error filling in template 't.erb' (line 2: Can't find property '["a.c"]')})
    expect { render_text(job, '<%= p("z") %>', { "z" => 1 }) }
      .to raise_error(BoshTemplateTest::RenderError, /Can't find property '\["z"\]'/)
  end

  it "runs if_p only when every property is there, else .else; if_link likewise" do
    t = '<% if_p("a.b", "a.c") do |b, c| %><%= b %>-<%= c %><% end.else do %>none<% end %>'
    expect(render_text(job, t, {})).to eq("none")
    expect(render_text(job, t, { "a" => { "c" => "k" } })).to eq("5-k")
    t = '<% if_link("l") do |l| %><%= l.instances.map(&:address).join(",") %>/<%= l.p("q") %><% end.else do %>no link<% end %>'
    expect(render_text(job, t, {})).to eq("no link")
    links = { "l" => { "instances" => [{ "address" => "10.0.0.2" }, { "address" => "10.0.0.3" }],
                       "properties" => { "q" => "v" } } }
    expect(render_text(job, t, {}, links)).to eq("10.0.0.2,10.0.0.3/v")
    expect { render_text(job, '<%= link("nope") %>', {}) }
      .to raise_error(BoshTemplateTest::RenderError, /Can't find link 'nope'/)
  end

  it "trims with '-' like BOSH" do
    expect(render_text(job, "<%- x = 1 -%>\na<%= x -%>\nb\n", {})).to eq("a1b\n")
  end
end

RSpec.describe "the release layout" do
  let(:spec) { YAML.safe_load(File.read(File.join(T::JOB_DIR, "spec"))) }

  it "is named ikemesh, with no blobs committed" do
    expect(YAML.safe_load(File.read(File.join(T::RELEASE_DIR, "config", "final.yml")))["name"]).to eq("ikemesh")
    expect(YAML.safe_load(File.read(File.join(T::RELEASE_DIR, "config", "blobs.yml")))).to eq({})
    ignored = File.read(File.join(T::RELEASE_DIR, ".gitignore")).split("\n")
    expect(ignored).to include("dev_releases/", "blobs/", ".blobs/", ".dev_builds/", "config/private.yml")
  end

  it "ships meshd and meshctl as the package's blobs, installed 0755 into bin/" do
    pkg = YAML.safe_load(File.read(File.join(T::RELEASE_DIR, "packages", "ikemesh", "spec")))
    expect(pkg["name"]).to eq("ikemesh")
    expect(pkg["files"]).to eq(%w[ikemesh/meshd ikemesh/meshctl])
    %w[meshd meshctl].each do |b|
      installed = File.join(T.package_dir, "bin", b)
      expect(File.stat(installed).mode & 0o7777).to eq(0o755)
      expect(File.size(installed)).to eq(File.size(File.join(T::BIN_DIR, b)))
    end
  end

  it "lists every template file in the job spec, and nothing else" do
    on_disk = Dir.children(File.join(T::JOB_DIR, "templates")).sort
    expect(spec["templates"].keys.sort).to eq(on_disk)
    expect(spec["packages"]).to eq(["ikemesh"])
    expect(spec["provides"]).to eq([{ "name" => "ikemesh", "type" => "ikemesh" }])
    expect(spec["consumes"]).to eq([{ "name" => "ikemesh", "type" => "ikemesh" }])
  end

  it "describes every property, and gives secrets and the CA no default" do
    props = spec["properties"]
    props.each do |name, d|
      expect(d["description"].to_s.strip).not_to be_empty, "#{name} has no description"
      expect(name).to start_with("ikemesh.")
    end
    %w[ikemesh.certificate_authority_cert ikemesh.certificate_authority_private_key
       ikemesh.certificate_authority_signing_cert ikemesh.spa_secret].each do |secret|
      expect(props).to have_key(secret)
      expect(props[secret]).not_to have_key("default")
    end
    expect(props.transform_values { |d| d["default"] }).to include(
      "ikemesh.disabled" => false, "ikemesh.level" => "use", "ikemesh.certificate_lifetime" => "30d",
      "ikemesh.spa_enabled" => true, "ikemesh.spa_port" => 62_201, "ikemesh.protected_networks" => [],
      "ikemesh.exclusions" => [], "ikemesh.additional_members" => [],
      "ikemesh.ike_rekey_interval" => "4h", "ikemesh.child_rekey_interval" => "1h",
      "ikemesh.liveness_interval" => "30s", "ikemesh.on_demand" => false,
      "ikemesh.on_stop" => "keep", "ikemesh.log_format" => "text"
    )
  end

  it "has the standard bpm monit shim, naming bpm's pidfile" do
    monit = File.read(File.join(T::JOB_DIR, "monit"))
    expect(monit).to eq(<<~MONIT)
      check process meshd
        with pidfile /var/vcap/sys/run/bpm/meshd/meshd.pid
        start program "/var/vcap/jobs/bpm/bin/bpm start meshd"
        stop program "/var/vcap/jobs/bpm/bin/bpm stop meshd"
        group vcap
    MONIT
  end
end

RSpec.describe "config/bpm.yml" do
  let(:bpm) { YAML.safe_load(render_one(fixture("three-at-use"), "bpm.yml.erb")) }

  it "runs meshd unprivileged with NET_ADMIN and NET_BIND_SERVICE on the rendered config" do
    expect(bpm.keys).to eq(["processes"])
    expect(bpm["processes"].length).to eq(1)
    proc = bpm["processes"].first
    expect(proc["name"]).to eq("meshd")
    expect(proc["executable"]).to eq("/var/vcap/packages/ikemesh/bin/meshd")
    config_dest = YAML.safe_load(File.read(File.join(T::JOB_DIR, "spec")))["templates"]["meshd.toml.erb"]
    expect(proc["args"]).to eq(["--config", "/var/vcap/jobs/meshd/#{config_dest}"])
    expect(proc["capabilities"]).to eq(%w[NET_ADMIN NET_BIND_SERVICE])
    expect(proc).not_to have_key("unsafe")
  end

  it "mounts /var/vcap/data/meshd (ephemeral_disk) and the socket directory writable, as bpm allows" do
    proc = bpm["processes"].first
    expect(proc["ephemeral_disk"]).to be(true)
    volumes = proc["additional_volumes"]
    expect(volumes).to eq([{ "path" => "/var/vcap/sys/run/meshd", "writable" => true }])
    # bpm's own validation: canonical paths inside /var/vcap, never the job's default
    # data or store directory (bpm refuses to start the job otherwise).
    volumes.each do |v|
      expect(File.expand_path(v["path"])).to eq(v["path"])
      expect(v["path"]).to start_with("/var/vcap/")
      expect(v["path"]).not_to eq("/var/vcap/data/meshd")
      expect(v["path"]).not_to eq("/var/vcap/store/meshd")
    end
    conf = toml(fixture("three-at-use"))
    expect(File.dirname(conf["daemon"]["control_socket"])).to eq("/var/vcap/sys/run/meshd")
    expect(conf["daemon"]["state_dir"]).to start_with("/var/vcap/data/meshd/")
  end
end

RSpec.describe "config/meshd.toml" do
  it "names the node after the instance id at its address, with every link instance a member" do
    fx = fixture("three-at-use")
    conf = toml(fx)
    me = fx["instances"][1]
    expect(conf["node"]).to eq("name" => me["id"], "addresses" => [me["address"]])
    expect(conf["mesh"]["members"]).to eq(fx["instances"].map { |i| { "name" => i["id"], "addresses" => [i["address"]] } })
    expect(conf["mesh"]["level"]).to eq("use")
    expect(conf["mesh"]).not_to have_key("networks")
    expect(conf["mesh"]).not_to have_key("exclusions")
    expect(conf["pki"]).to eq("ca" => "/var/vcap/jobs/meshd/config/ca.pem",
                              "cert" => "/var/vcap/data/meshd/node.pem",
                              "key" => "/var/vcap/data/meshd/node.key")
    expect(conf["spa"]).to eq("enabled" => true, "secret" => "/var/vcap/data/meshd/spa.key", "port" => 62_201)
    expect(conf["ike"]).to eq("rekey" => "4h", "child_rekey" => "1h", "liveness" => "30s", "on_demand" => false)
    expect(conf["daemon"]).to eq("state_dir" => "/var/vcap/data/meshd/state",
                                 "control_socket" => "/var/vcap/sys/run/meshd/meshd.sock",
                                 "on_stop" => "keep", "log_format" => "text")
  end

  it "maps level, protected networks, exclusions and the tuning properties" do
    conf = toml(fixture("require-protected"))
    expect(conf["mesh"]["level"]).to eq("require")
    expect(conf["mesh"]["networks"]).to eq([{ "name" => "ikemesh.protected_networks",
                                              "prefixes" => ["10.244.1.0/24", "10.244.2.0/24"] }])
    expect(conf["mesh"]["exclusions"]).to eq([
      { "name" => "bosh-dns", "protocol" => "udp", "port" => 53 },
      { "name" => "director", "prefix" => "10.244.0.6/32" },
      { "name" => "app-ports", "protocol" => "tcp", "port" => "6000-6010", "prefix" => "10.244.2.0/24" },
      { "protocol" => "gre" },
    ])
    expect(conf["spa"]["port"]).to eq(61_000)
    expect(conf["ike"]).to eq("rekey" => "2h", "child_rekey" => "30m", "liveness" => "10s", "on_demand" => true)
    expect(conf["daemon"]).to include("on_stop" => "flush", "log_format" => "json")
  end

  it "renders level off when disabled, whatever ikemesh.level says" do
    expect(toml(fixture("disabled"))["mesh"]["level"]).to eq("off")
    expect(toml(with_property(fixture("disabled"), "ikemesh.disabled", false))["mesh"]["level"]).to eq("require")
  end

  it "adds ikemesh.additional_members after the link's instances, and leaves out the SPA secret when SPA is off" do
    fx = fixture("additional-members")
    conf = toml(fx)
    expect(conf["mesh"]["members"].map { |m| m["name"] })
      .to eq(fx["instances"].map { |i| i["id"] } + ["edge-1", "edge-2.example.internal"])
    expect(conf["mesh"]["members"].last["addresses"]).to eq(["10.244.9.6", "fd00:244:9::6"])
    expect(conf["spa"]).to eq("enabled" => false, "port" => 62_201)
    Dir.mktmpdir { |out| expect(File.read(render_all(fx, out)["config/spa.key"])).to eq("") }
  end

  it "escapes strings for TOML" do
    fx = with_property(fixture("three-at-use"), "ikemesh.exclusions", [{ "name" => "a \"quoted\" \\ name", "protocol" => 47 }])
    expect(toml(fx)["mesh"]["exclusions"]).to eq([{ "name" => "a \"quoted\" \\ name", "protocol" => 47 }])
  end
end

RSpec.describe "the secrets and CA files" do
  it "renders the trust bundle, the signing CA (first of the bundle by default) and the SPA secret exactly" do
    Dir.mktmpdir do |out|
      files = render_all(fixture("three-at-use"), out)
      expect(File.read(files["config/ca.pem"]).strip).to eq(T.vars["mesh_ca"]["certificate"].strip)
      expect(File.read(files["config/ca-signing.pem"]).strip).to eq(T.vars["mesh_ca"]["certificate"].strip)
      expect(File.read(files["config/ca-signing.key"]).strip).to eq(T.vars["mesh_ca"]["private_key"].strip)
      expect(File.read(files["config/spa.key"])).to eq(T.vars["spa_secret"])
      expect(File.stat(files["bin/pre-start"]).mode & 0o777).to eq(0o755)
    end
  end

  it "converts a PKCS#1 RSA CA key (as CredHub generates it) to PKCS#8, the same key" do
    Dir.mktmpdir do |out|
      files = render_all(fixture("credhub-ca"), out)
      rendered = File.read(files["config/ca-signing.key"])
      expect(rendered).to start_with("-----BEGIN PRIVATE KEY-----\n")
      given = OpenSSL::PKey.read(T.vars["credhub_ca"]["private_key"])
      expect(OpenSSL::PKey.read(rendered).public_to_der).to eq(given.public_to_der)
    end
  end

  it "during a rotation: both CAs in the bundle, the chosen signing CA apart" do
    Dir.mktmpdir do |out|
      files = render_all(fixture("ca-rotation"), out)
      bundle = File.read(files["config/ca.pem"])
      expect(bundle.scan("-----BEGIN CERTIFICATE-----").length).to eq(2)
      expect(File.read(files["config/ca-signing.pem"]).strip).to eq(T.vars["mesh_ca_next"]["certificate"].strip)
    end
  end
end

RSpec.describe "rendering refuses bad properties with a message naming them" do
  let(:fx) { fixture("three-at-use") }

  {
    "ikemesh.spa_secret" => "spa.key.erb",
    "ikemesh.certificate_authority_cert" => "ca.pem.erb",
    "ikemesh.certificate_authority_private_key" => "ca-signing.key.erb",
  }.each do |prop, template|
    it "a missing #{prop}" do
      err = render_error(with_property(fx, prop, :delete))
      expect(err).not_to be_nil
      expect(err.message).to include(%(Can't find property '["#{prop}"]'))
      expect(err.template).to eq(template)
    end
  end

  it "an ikemesh.level other than use or require" do
    %w[required off Use].each do |bad|
      err = render_error(with_property(fx, "ikemesh.level", bad))
      expect(err&.message).to match(/ikemesh.level must be "use" or "require", not "#{bad}"/)
    end
  end

  it "an SPA secret shorter than 32 characters (32 is enough)" do
    err = render_error(with_property(fx, "ikemesh.spa_secret", "x" * 31))
    expect(err&.message).to include("ikemesh.spa_secret is 31 characters long: give at least 32")
    expect(render_error(with_property(fx, "ikemesh.spa_secret", "x" * 32))).to be_nil
  end

  it "a DNS name as a link instance's address (use_dns_addresses)" do
    dns = Marshal.load(Marshal.dump(fx))
    dns["instances"][2]["address"] = "c4a9e8d2-1f7b-4e3a-b6d0-9e2c5a7f1b83.meshd.default.mesh.bosh"
    err = render_error(dns)
    expect(err&.message).to include("link ikemesh: the address of instance meshd/c4a9e8d2-1f7b-4e3a-b6d0-9e2c5a7f1b83")
    expect(err.message).to include("is not an IP address")
    expect(err.message).to include("use_dns_addresses")
  end

  it "a DNS name as this instance's own address" do
    dns = Marshal.load(Marshal.dump(fx))
    dns["instances"][1]["address"] = "q-s0.meshd.default.mesh.bosh"
    err = render_error(dns)
    expect(err&.message).to include("spec.address of this instance")
    expect(err.message).to include(%("q-s0.meshd.default.mesh.bosh" is not an IP address))
  end

  it "a DNS name among an additional member's addresses" do
    err = render_error(with_property(fx, "ikemesh.additional_members", [{ "name" => "edge", "addresses" => ["edge.example.com"] }]))
    expect(err&.message).to include("ikemesh.additional_members[0] (edge) addresses")
    expect(err.message).to include("is not an IP address")
  end

  it "a protected network with host bits, or not a CIDR" do
    err = render_error(with_property(fx, "ikemesh.protected_networks", ["10.244.0.1/24"]))
    expect(err&.message).to include("ikemesh.protected_networks[0]: 10.244.0.1/24 has host bits set: write 10.244.0.0/24")
    err = render_error(with_property(fx, "ikemesh.protected_networks", ["10.244.0.0"]))
    expect(err&.message).to include("is not a CIDR prefix")
  end

  it "an exclusion with neither protocol, port nor prefix, or an unknown key" do
    err = render_error(with_property(fx, "ikemesh.exclusions", [{ "name" => "nothing" }]))
    expect(err&.message).to include("ikemesh.exclusions[0] (nothing): give at least one of protocol, port and prefix")
    err = render_error(with_property(fx, "ikemesh.exclusions", [{ "protocol" => "tcp", "ports" => 80 }]))
    expect(err&.message).to include("ikemesh.exclusions[0]: unknown key(s) ports")
  end

  it "a signing CA certificate that is not in the trust bundle" do
    bad = with_property(fx, "ikemesh.certificate_authority_signing_cert", "((mesh_ca_next.certificate))")
    err = render_error(bad)
    expect(err&.message).to include("ikemesh.certificate_authority_signing_cert is not in ikemesh.certificate_authority_cert")
  end

  it "a CA certificate or key that is not PEM" do
    err = render_error(with_property(fx, "ikemesh.certificate_authority_cert", "not a certificate"))
    expect(err&.message).to include("ikemesh.certificate_authority_cert holds no PEM certificate")
    err = render_error(with_property(fx, "ikemesh.certificate_authority_private_key", "not a key"))
    expect(err&.message).to include("ikemesh.certificate_authority_private_key holds no PEM private key")
    encrypted = OpenSSL::PKey::RSA.new(2048).to_pem(OpenSSL::Cipher.new("aes-128-cbc"), "secret")
    err = render_error(with_property(fx, "ikemesh.certificate_authority_private_key", encrypted))
    expect(err&.message).to include("ikemesh.certificate_authority_private_key: cannot convert the key to PKCS#8")
  end

  it "a non-boolean switch" do
    err = render_error(with_property(fx, "ikemesh.disabled", "yes"))
    expect(err&.message).to include('ikemesh.disabled must be true or false, not "yes"')
  end
end

RSpec.describe "on a VM: the rendered pre-start, then meshd --check-config" do
  def expect_good_check(vm)
    # No problem printed: nothing on stdout, and on stderr at most meshd's one line
    # saying the configuration is good.
    [vm[:check_vcap], vm[:check_root]].each do |c|
      expect(c[:out]).to eq(""), "meshd --check-config printed on stdout: #{c[:out]}"
      expect(c[:err].lines - ["meshd: /var/vcap/jobs/meshd/config/meshd.toml: configuration is good\n"]).to eq([])
      expect(c[:rc]).to eq(0)
    end
  end

  def expect_issued(vm, fx, ca_cert_pem, lifetime_days)
    me = fx["instances"][fx["this"]]
    cert = cert_of(vm[:certs].last)
    expect(san(cert)).to include("DNS:#{me["id"]}", "IP Address:#{me["address"]}")
    ca = cert_of(ca_cert_pem)
    expect(cert.issuer.to_s).to eq(ca.subject.to_s)
    expect(cert.verify(ca.public_key)).to be(true)
    expect(cert.not_after - cert.not_before).to be_within(2 * 3600).of(lifetime_days * 86_400)
  end

  {
    "three-at-use" => "mesh_ca", "require-protected" => "mesh_ca", "disabled" => "mesh_ca",
    "additional-members" => "mesh_ca", "credhub-ca" => "credhub_ca"
  }.each do |name, ca|
    it "#{name}: issues this instance's certificate and meshd accepts the configuration" do
      fx = fixture(name)
      vm = on_fake_vm(fx)
      pre = vm[:pre_start].first
      expect(pre[:rc]).to eq(0), "pre-start failed:\n#{pre[:out]}#{pre[:err]}"
      expect(pre[:out]).to include("configuration is good")
      expect_good_check(vm)
      lifetime = fx.dig("properties", "ikemesh", "certificate_lifetime") == "7d" ? 7 : 30
      expect_issued(vm, fx, T.vars[ca]["certificate"], lifetime)
    end
  end

  it "ca-rotation: the new CA signs, meshd verifies it against the two-CA bundle" do
    fx = fixture("ca-rotation")
    vm = on_fake_vm(fx)
    expect(vm[:pre_start].first[:rc]).to eq(0), vm[:pre_start].first.values.join("\n")
    expect_good_check(vm)
    expect_issued(vm, fx, T.vars["mesh_ca_next"]["certificate"], 30)
  end

  it "tries the modules, warns on the one that does not load, and leaves only 0600 secrets owned by vcap" do
    vm = on_fake_vm(fixture("three-at-use"))
    pre = vm[:pre_start].first
    expect(pre[:rc]).to eq(0), pre.values.join("\n")
    expect(vm[:modprobe]).to eq(%w[xfrm_user esp4 esp6])
    expect(pre[:out]).to include("warning: cannot load kernel module esp6")
    expect(pre[:out]).not_to include("module esp4")
    d = "/var/vcap/data/meshd"
    uid = vm[:vcap_uid]
    expect(uid).to eq(T.vcap_uid)
    expect(vm[:data_stat][d]).to eq(mode: "700", uid: uid, gid: uid)
    expect(vm[:data_stat]["#{d}/node.key"]).to eq(mode: "600", uid: uid, gid: uid)
    expect(vm[:data_stat]["#{d}/spa.key"]).to eq(mode: "600", uid: uid, gid: uid)
    expect(vm[:data_stat]["#{d}/node.pem"]).to include(uid: uid)
    # The rendered secrets (0644 as BOSH renders them) are root's alone afterwards, so
    # meshd, as vcap, cannot read the CA key; the trust bundle stays readable.
    c = "/var/vcap/jobs/meshd/config"
    expect(vm[:data_stat]["#{c}/ca-signing.key"]).to eq(mode: "600", uid: 0, gid: 0)
    expect(vm[:data_stat]["#{c}/spa.key"]).to eq(mode: "600", uid: 0, gid: 0)
    expect(vm[:data_stat]["#{c}/ca.pem"]).to include(mode: "644")
    expect(vm[:data_stat]["#{c}/meshd.toml"]).to include(mode: "644")
    expect(File.read(File.join(vm[:vcap], "data", "meshd", "spa.key"))).to eq(T.vars["spa_secret"])
    # The rendered copies stay where BOSH put them; meshd's config names only the 0600 ones.
    conf = Tomlrb.parse(File.read(File.join(vm[:vcap], "jobs", "meshd", "config", "meshd.toml")))
    [conf["pki"]["key"], conf["spa"]["secret"]].each do |secret|
      expect(vm[:data_stat][secret]).to include(mode: "600")
    end
  end

  it "issues a fresh certificate on every run (a redeploy or restart)" do
    vm = on_fake_vm(fixture("three-at-use"), runs: 2)
    expect(vm[:pre_start].map { |s| s[:rc] }).to eq([0, 0]), vm[:pre_start].map(&:values).join("\n")
    first, second = vm[:certs].map { |pem| cert_of(pem) }
    expect(second.serial).not_to eq(first.serial)
    expect(File.read(File.join(vm[:vcap], "data", "meshd", "node.pem"))).to eq(vm[:certs].last)
    expect_good_check(vm)
  end

  it "fails the deploy with meshd's message when meshd refuses the configuration" do
    # Renders (every prefix is well formed) but meshd refuses it: members outside the
    # protected networks.
    fx = with_property(fixture("require-protected"), "ikemesh.protected_networks", ["192.168.0.0/24"])
    vm = on_fake_vm(fx)
    pre = vm[:pre_start].first
    expect(pre[:rc]).not_to eq(0)
    expect(pre[:err]).to include("meshd refuses the rendered configuration /var/vcap/jobs/meshd/config/meshd.toml")
    expect(pre[:err]).to match(%r{^meshd: /var/vcap/jobs/meshd/config/meshd.toml: mesh.networks: .* is in no protected network}), pre[:err]
    expect(vm[:check_vcap][:rc]).to eq(1)
  end

  it "fails the deploy when the CA key does not belong to the signing certificate" do
    fx = with_property(fixture("three-at-use"), "ikemesh.certificate_authority_private_key", "((mesh_ca_next.private_key))")
    vm = on_fake_vm(fx)
    pre = vm[:pre_start].first
    expect(pre[:rc]).not_to eq(0)
    expect(pre[:out]).not_to include("configuration is good")
    expect(pre[:err]).to include("no certificate in it is the certificate of /var/vcap/jobs/meshd/config/ca-signing.key")
    expect(pre[:err]).to include("cannot issue the node certificate")
  end

  it "fails the deploy on a certificate lifetime meshctl refuses" do
    vm = on_fake_vm(with_property(fixture("three-at-use"), "ikemesh.certificate_lifetime", "400d"))
    pre = vm[:pre_start].first
    expect(pre[:rc]).not_to eq(0)
    expect(pre[:err]).to include("400d")
    expect(pre[:err]).to include("cannot issue the node certificate")
  end
end

RSpec.describe "manifests/example.yml" do
  let(:manifest) { YAML.safe_load(File.read(File.join(T::RELEASE_DIR, "manifests", "example.yml"))) }
  let(:spec_props) { YAML.safe_load(File.read(File.join(T::JOB_DIR, "spec")))["properties"] }

  def dotted(h, prefix = nil)
    h.flat_map do |k, v|
      name = [prefix, k].compact.join(".")
      v.is_a?(Hash) && !spec_props.key?(name) ? dotted(v, name) : [name]
    end
  end

  it "colocates meshd with bpm, uses only declared properties and defines every variable it uses" do
    expect(manifest["releases"].map { |r| r["name"] }).to include("ikemesh", "bpm")
    group = manifest["instance_groups"].find { |g| g["jobs"].any? { |j| j["name"] == "meshd" } }
    expect(group["jobs"].map { |j| [j["name"], j["release"]] }).to include(%w[meshd ikemesh], %w[bpm bpm])
    meshd = group["jobs"].find { |j| j["name"] == "meshd" }
    dotted(meshd["properties"]).each { |name| expect(spec_props).to have_key(name) }
    used = File.read(File.join(T::RELEASE_DIR, "manifests", "example.yml")).scan(/\(\(([a-z_]+)[.)]/).flatten.uniq
    defined = manifest["variables"].map { |v| v["name"] }
    expect(defined).to include(*used)
  end

  it "renders, and meshd accepts what it renders" do
    group = manifest["instance_groups"].find { |g| g["jobs"].any? { |j| j["name"] == "meshd" } }
    props = group["jobs"].find { |j| j["name"] == "meshd" }["properties"]
    fx = fixture("three-at-use").merge("deployment" => manifest["name"], "instance_group" => group["name"],
                                       "properties" => props)
    vm = on_fake_vm(fx)
    expect(vm[:pre_start].first[:rc]).to eq(0), vm[:pre_start].first.values.join("\n")
    expect(vm[:check_vcap][:rc]).to eq(0), vm[:check_vcap][:err]
  end
end

RSpec.describe "scripts/add-blobs" do
  let(:script) { File.join(T::RELEASE_DIR, "scripts", "add-blobs") }

  def stubs(dir, with_bosh:)
    FileUtils.mkdir_p(dir)
    File.write(File.join(dir, "cargo"), <<~SH)
      #!/bin/bash
      echo "cargo $*" >> "#{dir}/calls"
      mkdir -p "$CARGO_TARGET_DIR/release"
      for b in meshd meshctl; do echo "$b" > "$CARGO_TARGET_DIR/release/$b"; chmod 755 "$CARGO_TARGET_DIR/release/$b"; done
    SH
    if with_bosh
      File.write(File.join(dir, "bosh"), <<~SH)
        #!/bin/bash
        echo "bosh $*" >> "#{dir}/calls"
      SH
    end
    Dir.children(dir).each { |f| File.chmod(0o755, File.join(dir, f)) }
    dir
  end

  it "refuses clearly, before building anything, when the bosh CLI is missing" do
    dir = stubs(File.join(Dir.mktmpdir("ab-", T.work), "bin"), with_bosh: false)
    out, err, status = Open3.capture3({ "PATH" => "#{dir}:/usr/bin:/bin", "CARGO_TARGET_DIR" => File.join(dir, "t") },
                                      script)
    expect(status.success?).to be(false)
    expect(err).to include("the bosh CLI is not on PATH")
    expect(out).to eq("")
    expect(File.exist?(File.join(dir, "calls"))).to be(false)
  end

  it "builds the release binaries and adds both as the package's blobs" do
    dir = stubs(File.join(Dir.mktmpdir("ab-", T.work), "bin"), with_bosh: true)
    target = File.join(dir, "t")
    _out, err, status = Open3.capture3({ "PATH" => "#{dir}:/usr/bin:/bin", "CARGO_TARGET_DIR" => target }, script)
    expect(status.success?).to be(true), err
    calls = File.read(File.join(dir, "calls")).split("\n")
    expect(calls).to eq([
      "cargo build --release -p mesh --bins --locked",
      "bosh add-blob #{target}/release/meshd ikemesh/meshd --dir #{T::RELEASE_DIR}",
      "bosh add-blob #{target}/release/meshctl ikemesh/meshctl --dir #{T::RELEASE_DIR}",
    ])
  end
end
