package org.foveate.demo;

import java.io.File;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import android.app.Activity;
import android.os.Bundle;
import android.widget.ScrollView;
import android.widget.TextView;

import org.foveate.core.GoldenReplay;
import org.foveate.core.Manifest;
import org.foveate.core.Pipeline;

/**
 * The build's golden.json replayed on the phone: every case greedy through ExecuTorch with one memory per
 * method, token for token against the ids the PyTorch model produced, with each case's timings.
 */
public final class SelfCheckActivity extends Activity {
    private final ExecutorService worker = Executors.newSingleThreadExecutor();

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        TextView report = new TextView(this);
        report.setPadding(24, 24, 24, 24);
        report.setTextIsSelectable(true);
        ScrollView scroll = new ScrollView(this);
        scroll.addView(report);
        setContentView(scroll);
        File dir = new File(getIntent().getStringExtra(MainActivity.EXTRA_BUILD));
        report.setText("Replaying " + dir.getName() + "/golden.json ...");
        worker.execute(() -> {
            String text;
            try {
                Manifest m = Manifest.load(dir);
                try (Pipeline pipe = new Pipeline(m, new ExecuTorchEngine(m, 0))) {
                    GoldenReplay.Report r = GoldenReplay.run(pipe, Images.GOLDEN);
                    text = (r.allMatch() ? "PASS\n" : "FAIL\n") + r;
                }
            } catch (RuntimeException e) {
                text = "FAIL: " + e.getMessage();
            }
            String shown = text;
            runOnUiThread(() -> report.setText(shown));
        });
    }

    @Override
    protected void onDestroy() {
        worker.shutdown();
        super.onDestroy();
    }
}
