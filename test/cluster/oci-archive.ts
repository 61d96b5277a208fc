// Writes an OCI image archive (an image layout in a tar, what `ctr images import` and
// `skopeo copy oci-archive:` read) from local files, with no daemon and no registry: one
// uncompressed layer, reproducible (sorted entries, mtime 0, every file owned by root unless
// --preserve-owners).
//
//   node test/cluster/oci-archive.ts --name localhost/x/pause:3.4 --out pause.tar \
//     --add /path/to/pause:/pause --entrypoint /pause
//   node test/cluster/oci-archive.ts --name localhost/x/busybox:1 --out bb.tar \
//     --rootfs /path/to/rootfs --cmd sh --env PATH=/bin
//
// --add SRC:DEST (repeatable) copies a file or directory to DEST in the image; --rootfs DIR takes
// a whole directory as the image's root. The image name goes into the index as
// io.containerd.image.name (containerd) and org.opencontainers.image.ref.name (the tag).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export interface ImageSpec {
  name: string;
  /** Directories or files to copy in, as [source, destination in the image]. */
  add: Array<[string, string]>;
  rootfs?: string;
  entrypoint: string[];
  cmd: string[];
  env: string[];
  user?: string;
  workdir?: string;
  labels: Record<string, string>;
  /** Keep the files' numeric owners (a whole OS root filesystem) instead of making root own all. */
  preserveOwners?: boolean;
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'pipe'] });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${r.stderr?.toString().trim()}`);
  }
}

const ROOT_OWNED = ['--owner=0', '--group=0'];

/** Tars DIR's contents into OUT reproducibly: sorted names, mtime 0, numeric owners. */
function tarDir(dir: string, out: string, extra: string[] = ROOT_OWNED): void {
  run('tar', ['--sort=name', '--mtime=@0', '--numeric-owner', ...extra, '-C', dir, '-cf', out, '.']);
}

/** The image's architecture in OCI terms (GOARCH names). */
export function ociArch(nodeArch: string = process.arch): string {
  const arch: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    s390x: 's390x',
    ppc64: 'ppc64le',
  };
  const a = arch[nodeArch];
  if (!a) throw new Error(`oci-archive: no OCI architecture for Node's process.arch '${nodeArch}'`);
  return a;
}

/** Splits `registry/repo:tag` into the tag (default "latest"); digests are not accepted. */
export function tagOf(name: string): string {
  if (name.includes('@')) throw new Error(`oci-archive: --name '${name}' must be a tag, not a digest`);
  const last = name.slice(name.lastIndexOf('/') + 1);
  const i = last.lastIndexOf(':');
  return i < 0 ? 'latest' : last.slice(i + 1);
}

export function writeOciArchive(spec: ImageSpec, out: string): { digest: string } {
  const work = mkdtempSync(join(tmpdir(), 'oci-archive-'));
  try {
    // A root filesystem alone is tarred in place (it may hold device nodes, which cannot be
    // copied); files to add go into a copy.
    let root = spec.rootfs ?? join(work, 'rootfs');
    if (spec.add.length > 0) {
      root = join(work, 'rootfs');
      mkdirSync(root);
      if (spec.rootfs) cpSync(spec.rootfs, root, { recursive: true, verbatimSymlinks: true });
      for (const [src, dest] of spec.add) {
        const target = join(root, dest);
        mkdirSync(dirname(target), { recursive: true });
        cpSync(src, target, { recursive: true, verbatimSymlinks: true });
      }
    } else if (!spec.rootfs) {
      throw new Error('oci-archive: nothing to put in the image (give --rootfs or --add)');
    }
    const layerPath = join(work, 'layer.tar');
    tarDir(root, layerPath, spec.preserveOwners ? ['--xattrs'] : ['--xattrs', ...ROOT_OWNED]);
    const layer = readFileSync(layerPath);
    const layerDigest = sha256(layer);

    const layout = join(work, 'layout');
    const blobs = join(layout, 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true });
    renameSync(layerPath, join(blobs, layerDigest));
    const putBlob = (obj: unknown): { digest: string; size: number } => {
      const data = Buffer.from(JSON.stringify(obj));
      const digest = sha256(data);
      writeFileSync(join(blobs, digest), data);
      return { digest: `sha256:${digest}`, size: data.length };
    };
    const config = putBlob({
      architecture: ociArch(),
      os: 'linux',
      created: '1970-01-01T00:00:00Z',
      config: {
        ...(spec.entrypoint.length ? { Entrypoint: spec.entrypoint } : {}),
        ...(spec.cmd.length ? { Cmd: spec.cmd } : {}),
        ...(spec.env.length ? { Env: spec.env } : {}),
        ...(spec.user ? { User: spec.user } : {}),
        ...(spec.workdir ? { WorkingDir: spec.workdir } : {}),
        ...(Object.keys(spec.labels).length ? { Labels: spec.labels } : {}),
      },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
      history: [{ created: '1970-01-01T00:00:00Z', created_by: 'test/cluster/oci-archive.ts' }],
    });
    const manifest = putBlob({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar',
          digest: `sha256:${layerDigest}`,
          size: layer.length,
        },
      ],
    });
    writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    writeFileSync(
      join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            ...manifest,
            annotations: {
              'io.containerd.image.name': spec.name,
              'org.opencontainers.image.ref.name': tagOf(spec.name),
            },
          },
        ],
      }),
    );
    const tmpOut = `${out}.partial`;
    tarDir(layout, tmpOut);
    renameSync(tmpOut, out);
    return { digest: manifest.digest };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function main(): void {
  const { values } = parseArgs({
    options: {
      name: { type: 'string' },
      out: { type: 'string' },
      add: { type: 'string', multiple: true, default: [] },
      rootfs: { type: 'string' },
      entrypoint: { type: 'string', multiple: true, default: [] },
      cmd: { type: 'string', multiple: true, default: [] },
      env: { type: 'string', multiple: true, default: [] },
      label: { type: 'string', multiple: true, default: [] },
      user: { type: 'string' },
      workdir: { type: 'string' },
      'preserve-owners': { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (!values.name || !values.out) throw new Error('oci-archive: --name and --out are required');
  const add = values.add.map((a): [string, string] => {
    const i = a.lastIndexOf(':');
    if (i <= 0 || !a.slice(i + 1).startsWith('/'))
      throw new Error(`oci-archive: --add '${a}' must be SRC:/DEST`);
    return [resolve(a.slice(0, i)), a.slice(i + 1)];
  });
  const labels = Object.fromEntries(
    values.label.map((l) => {
      const i = l.indexOf('=');
      if (i <= 0) throw new Error(`oci-archive: --label '${l}' must be KEY=VALUE`);
      return [l.slice(0, i), l.slice(i + 1)];
    }),
  );
  const { digest } = writeOciArchive(
    {
      name: values.name,
      add,
      rootfs: values.rootfs,
      entrypoint: values.entrypoint,
      cmd: values.cmd,
      env: values.env,
      user: values.user,
      workdir: values.workdir,
      labels,
      preserveOwners: values['preserve-owners'],
    },
    resolve(values.out),
  );
  process.stderr.write(`[oci-archive] ${values.name} ${digest} -> ${values.out}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
