"""Convert a PyTorch `.pth` state dict (zip format) to `.safetensors` with the standard
library only: no torch needed, so CI can fetch the controlled VLM's vision encoder without
the Python reference stack.

  python3 tools/pth_to_safetensors.py IN.pth OUT.safetensors [--source TEXT]

Tensors are written as contiguous f32 (f16/bf16/f64 are widened or narrowed); integer
buffers named `*num_batches_tracked` are dropped, as tools/efficientnet_lite0.py does.
Strided tensors (e.g. channels-last weights) are gathered into C order; an unknown storage
type or a truncated file is refused by name. Reads the zip format and torch's legacy format.
"""
import itertools
import json
import pickle
import struct
import sys
import zipfile

_DTYPES = {  # storage class name -> (struct code, size)
    'FloatStorage': ('f', 4), 'DoubleStorage': ('d', 8), 'HalfStorage': ('e', 2),
    'LongStorage': ('q', 8), 'IntStorage': ('i', 4),
}


class _Storage:
    def __init__(self, kind, key):
        self.kind, self.key = kind, key


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == 'torch._utils' and name == '_rebuild_tensor_v2':
            return _rebuild_tensor_v2
        if module == 'torch' and name.endswith('Storage'):
            return name
        if module == 'collections' and name == 'OrderedDict':
            import collections
            return collections.OrderedDict
        raise pickle.UnpicklingError(f'unexpected object {module}.{name} in the checkpoint')

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        kind, key = pid[1], pid[2]
        if kind not in _DTYPES:
            raise pickle.UnpicklingError(f'unsupported storage type {kind}')
        return _Storage(kind, key)


def _storages_zip(path):
    z = zipfile.ZipFile(path)
    pkl = next(n for n in z.namelist() if n.endswith('/data.pkl'))
    root = pkl[:-len('data.pkl')]
    sd = _Unpickler(z.open(pkl)).load()
    return sd, lambda key: z.read(f'{root}data/{key}')


def _storages_legacy(path):
    # torch's pre-1.6 format: magic, protocol, sys info, the state dict pickle, the storage
    # keys, then per key an int64 element count and the raw little-endian data
    f = open(path, 'rb')
    magic = pickle.load(f)
    if magic != 0x1950a86a20f9469cfc6c:
        raise ValueError(f'{path}: not a PyTorch checkpoint (neither zip nor legacy format)')
    pickle.load(f)
    pickle.load(f)
    up = _Unpickler(f)
    sd = up.load()
    keys = pickle.load(f)
    kinds = {}
    for v in sd.values():
        kinds[v.storage.key] = v.storage.kind
    data = {}
    for key in keys:
        (n,) = struct.unpack('<q', f.read(8))
        data[key] = f.read(n * _DTYPES[kinds[key]][1])
    return sd, data.__getitem__


def read_pth(path):
    sd, storage = (_storages_zip if zipfile.is_zipfile(path) else _storages_legacy)(path)
    out = {}
    for name, t in sd.items():
        if name.endswith('num_batches_tracked'):
            continue
        code, size = _DTYPES[t.storage.kind]
        numel = 1
        for s in t.size:
            numel *= s
        span = 1 + sum((n - 1) * st for n, st in zip(t.size, t.stride)) if numel else 0
        raw = storage(t.storage.key)[t.offset * size:(t.offset + span) * size]
        if len(raw) != span * size:
            raise ValueError(f'{name}: storage too short (truncated checkpoint?)')
        flat = struct.unpack(f'<{span}{code}', raw)
        contiguous = all(st == acc for st, acc in zip(t.stride, _c_strides(t.size)))
        if contiguous:
            vals = flat
        else:  # e.g. channels-last weights: gather in C order
            vals = [flat[sum(i * st for i, st in zip(idx, t.stride))]
                    for idx in itertools.product(*[range(n) for n in t.size])]
        out[name] = (list(t.size), struct.pack(f'<{numel}f', *[float(v) for v in vals]))
    return out


def _c_strides(size):
    out, acc = [], 1
    for n in reversed(size):
        out.append(acc)
        acc *= n
    return list(reversed(out))


def write_safetensors(tensors, path, metadata):
    header, offset = {'__metadata__': metadata}, 0
    for name in sorted(tensors):
        shape, data = tensors[name]
        header[name] = {'dtype': 'F32', 'shape': shape, 'data_offsets': [offset, offset + len(data)]}
        offset += len(data)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for name in sorted(tensors):
            f.write(tensors[name][1])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    source = sys.argv[sys.argv.index('--source') + 1] if '--source' in sys.argv else sys.argv[1]
    tensors = read_pth(sys.argv[1])
    write_safetensors(tensors, sys.argv[2], {'source': source})
    print(f'wrote {len(tensors)} tensors to {sys.argv[2]}')


if __name__ == '__main__':
    main()
