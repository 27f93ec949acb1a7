"""Generator of the straight-line Winograd F(4x4,3x3) transforms in :mod:`cnnc.kernels.conv.winograd`.

Not imported at run time.  ``python -m cnnc.kernels.conv.winograd_gen`` prints ``_w4_in``,
``_w4_out`` and ``_w4_dy`` exactly as they appear in ``winograd.py`` (paste them back after a
change).  Matrices: Lavin & Gray (2016); y = A^T [(G g G^T) * (B^T d B)] A.
"""

from __future__ import annotations

BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
      [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
KN = {2: "k2", 4: "k4", 5: "k5", 8: "k8"}  # typed constants (no float64 promotion)


def lin(coefs, names, typed=True):
    out=''
    for c,n in zip(coefs,names):
        if c==0: continue
        neg = c<0; a=abs(c)
        if a==1: term=n
        elif typed and a in KN: term=f'{KN[a]} * {n}'
        else: term=f'{float(a)!r} * {n}'
        if not out: out = ('-' if neg else '') + term
        else: out += (' - ' if neg else ' + ') + term
    return out or 'zero'
I='    '


def gen_in():
    L=[]
    L.append('@njit(cache=True, fastmath=FASTMATH)')
    L.append('def _w4_in(ws, boff, C, Hp, Wp, TH, TW, voff, Tb, t0):')
    L.append('    """V[k, c, t0 + th*TW + tw] = (B^T d B)[k], d the 6x6 tile at (4th, 4tw) '
             '(generated)."""')
    L.append('    CT = _kstride(C, Tb)')
    L += [f'    k{k} = ws.dtype.type({k})' for k in (2, 4, 5)]
    L.append('    for c in range(C):')
    L.append('        cb = boff + c * Hp * Wp')
    L.append('        vb = voff + c * Tb + t0')
    L.append('        for th in range(TH):')
    for r in range(6):
        L.append(f'            p{r} = _u(cb + (4 * th + {r}) * Wp)')
    L.append('            vr = _u(vb + th * TW)')
    L.append('            for tw in range(TW):')
    L.append('                j = _u(4 * tw)')
    ind='                '
    for r in range(6):
        for c in range(6):
            L.append(f'{ind}d{r}{c} = ws[p{r} + j + _u({c})]' if c
                     else f'{ind}d{r}{c} = ws[p{r} + j]')
    # rows: t_i_c = sum_r BT[i][r] d_r_c
    for i in range(6):
        for c in range(6):
            L.append(f'{ind}t{i}{c} = ' + lin(BT[i],[f'd{r}{c}' for r in range(6)]))
    L.append(f'{ind}o = vr + _u(tw)')
    for i in range(6):
        for j in range(6):
            k=6*i+j
            e=lin(BT[j],[f't{i}{c}' for c in range(6)])
            L.append(f'{ind}ws[o + _u({k} * CT)] = {e}' if k else f'{ind}ws[o] = {e}')
    return '\n'.join(L)


def gen_out():
    L=[]
    L.append('@njit(cache=True, fastmath=FASTMATH)')
    L.append('def _w4_out(ws, moff, Fo, Tb, t0, TH, TW, b, has_bias, relu, of, ooff, Ho, Wo, th0):')
    L.append('    """out[f, 4(th0+th)+i, 4tw+j] = (A^T M A)[i, j] (+ bias, ReLU), clipped '
             '(generated)."""')
    L.append('    FT = _kstride(Fo, Tb)')
    L.append('    zero = of.dtype.type(0)')
    L += [f'    k{k} = ws.dtype.type({k})' for k in (2, 4, 8)]
    L.append('    for f in range(Fo):')
    L.append('        bf = b[f] if has_bias else zero')
    L.append('        mb = moff + f * Tb + t0')
    L.append('        ob = ooff + f * Ho * Wo')
    L.append('        for th in range(TH):')
    L.append('            mr = _u(mb + th * TW)')
    L.append('            oh = 4 * (th0 + th)')
    L.append('            for tw in range(TW):')
    ind='                '
    L.append(f'{ind}o = mr + _u(tw)')
    for k in range(36):
        L.append(f'{ind}m{k} = ws[o + _u({k} * FT)]' if k else f'{ind}m{k} = ws[o]')
    for i in range(4):
        for j in range(6):
            L.append(f'{ind}s{i}{j} = ' + lin(AT[i],[f'm{r*6+j}' for r in range(6)]))
    for i in range(4):
        for jj in range(4):
            L.append(f'{ind}y{i}{jj} = ' + lin(AT[jj],[f's{i}{j}' for j in range(6)]) + ' + bf')
    L.append(f'{ind}if relu:')
    for i in range(4):
        for jj in range(4):
            L.append(f'{ind}    y{i}{jj} = max(y{i}{jj}, zero)')
    L.append(f'{ind}ow = 4 * tw')
    L.append(f'{ind}d = _u(ob + oh * Wo + ow)')
    L.append(f'{ind}nc = Wo - ow')
    for i in range(4):
        L.append(f'{ind}if oh + {i} < Ho:' if i else f'{ind}if True:')
        for jj in range(4):
            off = f'd + _u({i} * Wo + {jj})' if (i or jj) else 'd'
            if jj:
                L.append(f'{ind}    if nc > {jj}:')
                L.append(f'{ind}        of[{off}] = y{i}{jj}')
            else:
                L.append(f'{ind}    of[{off}] = y{i}{jj}')
    return '\n'.join(L)


def gen_dy():
    L=[]
    L.append('@njit(cache=True, fastmath=FASTMATH)')
    L.append('def _w4_dy(ws, qoff, F, Hq, Wq, TH, TW, doff, DS, t0, dbp):')
    L.append('    """D[k, t0 + th*TW + tw, f] = (A g A^T)[k] for the 4x4 tile g at (4th, 4tw) '
             'of the')
    L.append('    zero-padded, ReLU-masked dy copy at ws[qoff] ([F, Hq, Wq]); db partials.')
    L.append('    Tile-major (f contiguous): the dW GEMMs are NN (generated)."""')
    L += [f'    k{k} = ws.dtype.type({k})' for k in (2, 4, 8)]
    L.append('    P = Hq * Wq')
    L.append('    for th in range(TH):')
    L.append('        for tw in range(TW):')
    L.append('            s0 = _u(qoff + 4 * th * Wq + 4 * tw)')
    L.append('            d = _u(doff + (t0 + th * TW + tw) * F)')
    L.append('            for f in range(F):')
    ind='                '
    L.append(f'{ind}s = s0 + _u(f * P)')
    for a in range(4):
        for c in range(4):
            off=f's + _u({a} * Wq + {c})' if (a or c) else 's'
            L.append(f'{ind}g{a}{c} = ws[{off}]')
    for h in range(2):
        L.append(f'{ind}q{h} = ' + ' + '.join(f'g{a}{c}' for a in (2 * h, 2 * h + 1)
                                               for c in range(4)))
    L.append(f'{ind}ws[dbp + f] += q0 + q1')
    for i in range(6):
        for c in range(4):
            L.append(f'{ind}r{i}{c} = ' + lin([AT[a][i] for a in range(4)],
                                               [f'g{a}{c}' for a in range(4)]))
    L.append(f'{ind}o = d + _u(f)')
    for i in range(6):
        for j in range(6):
            k=6*i+j
            e=lin([AT[c][j] for c in range(4)],[f'r{i}{c}' for c in range(4)])
            L.append(f'{ind}ws[o + _u({k} * DS)] = {e}' if k else f'{ind}ws[o] = {e}')
    return '\n'.join(L)


def main():
    print("\n\n\n".join([gen_in(), gen_out(), gen_dy()]))


if __name__ == "__main__":
    main()
