# frozen_string_literal: true

# A small renderer of BOSH job templates, for offline tests: it does what the director
# does with a job's templates (the bosh-template gem is not installable here), with the
# same helpers and the same semantics:
#
# - The job's properties are those its spec declares: each takes the manifest's value
#   (manifest properties are nested hashes, spec names are dotted), else the spec's
#   default, else it is absent. Properties the spec does not declare are not visible.
# - p("a.b") returns the value or raises UnknownProperty ("Can't find property
#   '["a.b"]'"); p("a.b", default) returns default when absent; p(["a", "b"]) returns the
#   first one present. A value of nil counts as absent.
# - if_p("a", "b") { |a, b| ... } runs the block when all are present and returns an
#   object whose .else { ... } runs otherwise (also .else_if_p, .else_if_link).
# - link("name") returns the link (.instances, each with name, id, index, az, address,
#   bootstrap; .p and .if_p on the link's properties); if_link("name") { |l| } .else.
# - spec: an OpenStruct of the instance spec (address, id, index, name, deployment,
#   bootstrap, ip, az, networks, job, ...), nested hashes as OpenStructs.
# - ERB with trim_mode "-". A failing template raises RenderError naming the template and
#   line, like the director's "Error filling in template 'x.erb' (line 12: ...)".
#
# Usage:
#   Renderer.new(job_dir).render(instance_spec, links, out_dir)  # => {dest => path}
#   Renderer.new(job_dir).render_template("meshd.toml.erb", instance_spec, links)
# where instance_spec is a Hash (string keys) with "properties" holding the manifest's
# properties for the job, and links maps a link name to {"instances" => [...],
# "properties" => {...}}.

require "erb"
require "fileutils"
require "ostruct"
require "yaml"

module BoshTemplateTest
  class UnknownProperty < StandardError
    attr_reader :names

    def initialize(names)
      @names = names
      super("Can't find property '#{names}'")
    end
  end

  class UnknownLink < StandardError
    def initialize(name)
      super("Can't find link '#{name}'")
    end
  end

  class RenderError < StandardError
    attr_reader :template, :cause_error

    def initialize(template, line, cause_error)
      @template = template
      @cause_error = cause_error
      where = line ? "line #{line}: " : ""
      super("Error filling in template '#{template}' (#{where}#{cause_error.message})")
    end
  end

  # Dotted-name lookup in nested hashes: "a.b.c" is h["a"]["b"]["c"].
  module PropertyLookup
    def self.lookup(hash, name)
      name.to_s.split(".").reduce(hash) do |node, key|
        return nil unless node.is_a?(Hash) && node.key?(key)

        node[key]
      end
    end

    def self.store(hash, name, value)
      keys = name.to_s.split(".")
      last = keys.pop
      node = keys.reduce(hash) { |h, k| h[k] = {} unless h[k].is_a?(Hash); h[k] }
      node[last] = value
    end

    def self.deep_copy(value)
      Marshal.load(Marshal.dump(value))
    end

    # p() and if_p() over a properties hash, for the template context and for links.
    module Helpers
      def p(*args)
        names = Array(args[0])
        names.each do |name|
          value = PropertyLookup.lookup(property_hash, name)
          return value unless value.nil?
        end
        return args[1] if args.length == 2

        raise UnknownProperty, names
      end

      def if_p(*names)
        values = names.map do |name|
          value = PropertyLookup.lookup(property_hash, name)
          return ActiveElse.new(self) if value.nil?

          value
        end
        yield(*values)
        InactiveElse.new
      end
    end
  end

  class ActiveElse
    def initialize(context)
      @context = context
    end

    def else
      yield
    end

    def else_if_p(*names, &block)
      @context.if_p(*names, &block)
    end

    def else_if_link(name, &block)
      @context.if_link(name, &block)
    end
  end

  class InactiveElse
    def else; end

    def else_if_p(*_names)
      InactiveElse.new
    end

    def else_if_link(_name)
      InactiveElse.new
    end
  end

  LinkInstance = Struct.new(:name, :index, :id, :az, :address, :properties, :bootstrap,
                            keyword_init: true)

  class Link
    include PropertyLookup::Helpers

    attr_reader :instances, :properties

    def initialize(spec)
      @properties = spec["properties"] || {}
      @instances = (spec["instances"] || []).map do |i|
        LinkInstance.new(name: i["name"], index: i["index"], id: i["id"], az: i["az"],
                         address: i["address"], properties: i["properties"],
                         bootstrap: i["bootstrap"])
      end
    end

    private

    def property_hash
      @properties
    end
  end

  # What a template sees as self: p, if_p, link, if_link, spec, name, index, properties.
  class Context
    include PropertyLookup::Helpers

    attr_reader :spec, :name, :index, :raw_properties

    def initialize(instance_spec, properties, links)
      @raw_properties = properties
      @links = links || {}
      @name = instance_spec.dig("job", "name")
      @index = instance_spec["index"]
      @spec = to_ostruct(instance_spec.merge("properties" => properties))
    end

    def properties
      to_ostruct(@raw_properties)
    end

    def link(name)
      l = @links[name]
      raise UnknownLink, name unless l.is_a?(Hash) && l.key?("instances")

      Link.new(l)
    end

    def if_link(name)
      l = @links[name]
      return ActiveElse.new(self) unless l.is_a?(Hash) && l.key?("instances")

      yield Link.new(l)
      InactiveElse.new
    end

    def template_binding
      binding
    end

    private

    def property_hash
      @raw_properties
    end

    def to_ostruct(value)
      case value
      when Hash then OpenStruct.new(value.transform_values { |v| to_ostruct(v) })
      when Array then value.map { |v| to_ostruct(v) }
      else value
      end
    end
  end

  class Renderer
    attr_reader :job_dir, :job_spec

    def initialize(job_dir)
      @job_dir = job_dir
      @job_spec = YAML.safe_load(File.read(File.join(job_dir, "spec")))
    end

    def templates
      @job_spec.fetch("templates")
    end

    # The job's properties as the director computes them from the spec and the
    # manifest: declared properties only, the manifest's value else the default.
    def job_properties(manifest_properties)
      props = {}
      (@job_spec["properties"] || {}).each do |name, definition|
        value = PropertyLookup.lookup(manifest_properties || {}, name)
        value = definition["default"] if value.nil? && definition.is_a?(Hash)
        PropertyLookup.store(props, name, PropertyLookup.deep_copy(value)) unless value.nil?
      end
      props
    end

    def render_template(template, instance_spec, links)
      path = File.join(@job_dir, "templates", template)
      erb = ERB.new(File.read(path), trim_mode: "-")
      erb.filename = template
      context = Context.new(instance_spec, job_properties(instance_spec["properties"]), links)
      erb.result(context.template_binding)
    rescue RenderError
      raise
    rescue StandardError, ScriptError => e
      line = e.backtrace&.each do |frame|
        m = frame.match(/\A#{Regexp.escape(template)}:(\d+)/)
        break m[1].to_i if m
      end
      line = nil unless line.is_a?(Integer)
      raise RenderError.new(template, line, e)
    end

    # Renders every template of the spec into out_dir (bin/* executable, like the
    # agent does), returns {destination => full path}.
    def render(instance_spec, links, out_dir)
      rendered = templates.to_h do |template, dest|
        [dest, render_template(template, instance_spec, links)]
      end
      rendered.to_h do |dest, text|
        full = File.join(out_dir, dest)
        FileUtils.mkdir_p(File.dirname(full))
        File.write(full, text)
        File.chmod(dest.start_with?("bin/") ? 0o755 : 0o644, full)
        [dest, full]
      end
    end
  end
end
