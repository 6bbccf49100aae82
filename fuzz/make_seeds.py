#!/usr/bin/env python3
"""Writes the small seed files of the fuzz corpora (fuzz/corpus/*/).

Needs numpy and safetensors (pip install numpy safetensors). Run from the
repository root: python3 fuzz/make_seeds.py

The random-weight fixtures in tests/fixtures/random/ are hundreds of KB;
fuzzing mutates better on small inputs, so each is shrunk to a model of the
same generation and layout with tiny dims (every dimension value is mapped
through DIMS, so equal dims stay equal and H*N = C still holds), keeping the
leading slice of every tensor. .pth seeds are written the way torch.save
lays them out (a stored zip with archive/data.pkl and archive/data/<key>),
pickled through stand-in `torch` classes so no torch install is needed.
"""
import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

FIX = 'tests/fixtures/random'
OUT = 'fuzz/corpus'
# fixture dim -> tiny dim. C 64/128 -> 4/8, head size 64 -> 4, vocab and
# ffn 256/448/512 -> 16/12/16, LoRA 32 -> 2 (so 5*32=160 -> 10).
DIMS = {64: 4, 128: 8, 256: 16, 512: 16, 448: 12, 32: 2, 160: 10}


def read_st(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    meta = hdr.pop('__metadata__', None)
    out = {}
    for k, e in hdr.items():
        s, t = e['data_offsets']
        raw = b[8 + n + s:8 + n + t]
        assert e['dtype'] == 'F32', e['dtype']
        out[k] = np.frombuffer(raw, dtype='<f4').reshape(e['shape'])
    return out, meta


def shrink(sd):
    small = {}
    for k, v in sd.items():
        shape = [DIMS.get(d, d) for d in v.shape]
        small[k] = np.ascontiguousarray(v[tuple(slice(0, d) for d in shape)])
    return small


def to_raw(v, dtype):
    v = np.ascontiguousarray(v, dtype=np.float32)
    if dtype == 'F32':
        return v.tobytes()
    if dtype == 'F16':
        return v.astype('<f2').tobytes()
    return (v.view(np.uint32) >> 16).astype('<u2').tobytes()  # BF16 (truncated)


def write_st(path, sd, dtype, meta=None):
    hdr, blobs, off = {}, [], 0
    if meta:
        hdr['__metadata__'] = meta
    for k, v in sd.items():
        raw = to_raw(v, dtype)
        hdr[k] = {'dtype': dtype, 'shape': list(v.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(hdr).encode()
    h += b' ' * (-len(h) % 8)
    data = struct.pack('<Q', len(h)) + h + b''.join(blobs)
    open(path, 'wb').write(data)
    return data


# --- stand-ins for the torch names a state-dict pickle refers to ----------
torch = types.ModuleType('torch')
utils = types.ModuleType('torch._utils')
sys.modules['torch'] = torch
sys.modules['torch._utils'] = utils


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = 'torch._utils'
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
STORAGE = {}
for name in ('FloatStorage', 'HalfStorage', 'BFloat16Storage'):
    cls = type(name, (), {'__module__': 'torch'})
    setattr(torch, name, cls)
    STORAGE[name] = cls
STORAGE_OF = {'F32': 'FloatStorage', 'F16': 'HalfStorage', 'BF16': 'BFloat16Storage'}


class Storage:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False,
                                     collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ('storage', obj.cls, obj.key, 'cpu', obj.numel)
        return None


def write_pth(path, sd, dtype):
    state, blobs = collections.OrderedDict(), []
    for i, (k, v) in enumerate(sd.items()):
        st = Storage(STORAGE[STORAGE_OF[dtype]], str(i), int(v.size))
        state[k] = Tensor(st, list(v.shape))
        blobs.append((str(i), to_raw(v, dtype)))
    pkl = io.BytesIO()
    Pickler(pkl, protocol=2).dump(state)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
        z.writestr('archive/data.pkl', pkl.getvalue())
        z.writestr('archive/byteorder', 'little')
        for key, raw in blobs:
            z.writestr(f'archive/data/{key}', raw)
        z.writestr('archive/version', '3\n')
    data = buf.getvalue()
    open(path, 'wb').write(data)
    return data


def main():
    for d in ('safetensors', 'pth', 'snapshot', 'tokenizer', 'persona', 'prompt'):
        os.makedirs(f'{OUT}/{d}', exist_ok=True)
    for v, dtype in ((4, 'F32'), (5, 'BF16'), (6, 'F16'), (7, 'BF16')):
        sd, meta = read_st(f'{FIX}/rand-v{v}.safetensors')
        small = shrink(sd)
        data = write_st(f'{OUT}/safetensors/tiny-v{v}-{dtype.lower()}.safetensors', small, dtype, meta)
        n = struct.unpack('<Q', data[:8])[0]
        # Truncations: inside the length prefix, inside the header, at the
        # first tensor boundary.
        for name, cut in (('len', 5), ('header', 8 + n // 2), ('data', 8 + n + 16)):
            open(f'{OUT}/safetensors/tiny-v{v}-cut-{name}.safetensors', 'wb').write(data[:cut])
        pdtype = 'BF16' if v in (4, 7) else 'F32'
        pth = write_pth(f'{OUT}/pth/tiny-v{v}-{pdtype.lower()}.pth', small, pdtype)
        if v == 4:
            eocd = pth.rfind(b'PK\x05\x06')
            cd = pth.find(b'PK\x01\x02')
            for name, cut in (('local', 20), ('cd', cd + 30), ('eocd', eocd + 10)):
                open(f'{OUT}/pth/tiny-v4-cut-{name}.pth', 'wb').write(pth[:cut])
    # Snapshots of the random v4 fixture (the model the snapshot target
    # restores into), written by quill itself so the checksum is right. The
    # target reads one mode byte first: 1 = reseal, 0 = take the bytes as is.
    quill = 'target/release/quill'
    if os.path.exists(quill):
        import subprocess
        model = f'{FIX}/rand-v4.safetensors'
        tmp = f'{OUT}/snapshot/tmp.qs'
        for name, args in (('v4-a', ['--prompt', 'Once upon', '-n', '4', '--seed', '1']),
                           ('v4-b', ['--prompt', '\u00e9', '-n', '1', '--seed', '2', '--temperature', '0']),
                           ('v4-c', ['--prompt', 'Once upon', '-n', '7', '--top-k', '3',
                                     '--presence', '0.3', '--seed', '3'])):
            subprocess.run([quill, 'generate', '-m', model, *args, '--state-out', tmp],
                           check=True, capture_output=True)
            data = open(tmp, 'rb').read()
            open(f'{OUT}/snapshot/{name}.reseal', 'wb').write(b'\x01' + data)
            open(f'{OUT}/snapshot/{name}.raw', 'wb').write(b'\x00' + data)
        os.remove(tmp)
    else:
        print('no target/release/quill: snapshot seeds not written (cargo build --release first)')
    print('wrote', OUT)


if __name__ == '__main__':
    main()
