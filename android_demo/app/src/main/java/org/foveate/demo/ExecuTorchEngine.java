package org.foveate.demo;

import java.io.File;

import org.foveate.core.BuildException;
import org.foveate.core.GraphEngine;
import org.foveate.core.Manifest;
import org.foveate.core.Protocol;
import org.foveate.core.Tensor;
import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;

/**
 * The runner protocol on the phone: the build's .pte through ExecuTorch's Android binding
 * (org.pytorch.executorch.Module), which gives each method memory of its own. The method and input names,
 * the checks and the vision K/V hand-over are the core's GraphEngine; this class only runs a method.
 */
public final class ExecuTorchEngine extends GraphEngine {
    private final Module module;

    public ExecuTorchEngine(Manifest manifest, int numThreads) {
        super(manifest);
        File pte = manifest.file(manifest.graphFiles.get(0));
        if (!pte.isFile()) {
            throw new BuildException(pte + ": no such file");
        }
        try {
            module = Module.load(pte.getAbsolutePath(), Module.LOAD_MODE_MMAP, numThreads);
            for (String method : Protocol.methodsFor(manifest.kv.layout)) {
                module.loadMethod(method); // a missing kernel or a truncated file fails here, not mid-answer
            }
        } catch (RuntimeException e) {
            throw new BuildException(pte + ": ExecuTorch cannot load it (" + e.getMessage() + ")");
        }
    }

    @Override
    protected Tensor[] run(String method, Tensor[] inputs) {
        EValue[] in = new EValue[inputs.length];
        for (int i = 0; i < inputs.length; i++) {
            Tensor t = inputs[i];
            in[i] = EValue.from(t.dtype == Tensor.DType.FLOAT32
                    ? org.pytorch.executorch.Tensor.fromBlob(t.floats(), t.shape())
                    : org.pytorch.executorch.Tensor.fromBlob(t.longs(), t.shape()));
        }
        EValue[] out;
        try {
            out = module.execute(method, in);
        } catch (RuntimeException e) {
            throw new BuildException(method + ": ExecuTorch failed to run it (" + e.getMessage() + ")");
        }
        Tensor[] result = new Tensor[out.length];
        for (int i = 0; i < out.length; i++) {
            org.pytorch.executorch.Tensor t = out[i].toTensor();
            result[i] = Tensor.ofFloats(t.getDataAsFloatArray(), t.shape());
        }
        return result;
    }

    @Override
    public void close() {
        module.destroy();
    }
}
