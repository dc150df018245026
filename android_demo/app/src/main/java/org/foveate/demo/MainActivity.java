package org.foveate.demo;

import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import android.content.Intent;
import android.graphics.Bitmap;
import android.net.Uri;
import android.os.Bundle;
import android.view.View;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.CheckBox;
import android.widget.EditText;
import android.widget.ImageView;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.Spinner;
import android.widget.TextView;

import androidx.activity.ComponentActivity;
import androidx.activity.result.ActivityResultLauncher;
import androidx.activity.result.PickVisualMediaRequest;
import androidx.activity.result.contract.ActivityResultContracts;

import org.foveate.core.ArgbImage;
import org.foveate.core.Manifest;
import org.foveate.core.Pipeline;
import org.foveate.core.Sampler;

/**
 * Pick or take a photo, ask a question, watch the answer stream in, with image encode, prefill, TTFT and
 * decode figures, the vision-token count and the plan's name. Builds are directories pushed under the app's
 * external files directory (README.md); a dense build can also run through the stock runner as the baseline.
 */
public final class MainActivity extends ComponentActivity {
    static final String EXTRA_BUILD = "build";
    private static final int MAX_NEW_TOKENS = 64;

    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private final List<File> builds = new ArrayList<>();
    private Spinner buildChoice;
    private ImageView preview;
    private EditText question;
    private CheckBox stock;
    private TextView answer;
    private TextView figures;
    private Bitmap photo;
    private File loadedDir;
    private Pipeline pipeline;
    private StockEngine stockEngine;

    private final ActivityResultLauncher<PickVisualMediaRequest> picker = registerForActivityResult(
            new ActivityResultContracts.PickVisualMedia(), this::onPicked);
    private final ActivityResultLauncher<Void> camera = registerForActivityResult(
            new ActivityResultContracts.TakePicturePreview(), this::onPhoto);

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        LinearLayout col = new LinearLayout(this);
        col.setOrientation(LinearLayout.VERTICAL);
        col.setPadding(24, 24, 24, 24);
        buildChoice = new Spinner(this);
        col.addView(buildChoice);
        LinearLayout row = new LinearLayout(this);
        row.addView(button("Photo", v -> picker.launch(new PickVisualMediaRequest.Builder()
                .setMediaType(ActivityResultContracts.PickVisualMedia.ImageOnly.INSTANCE).build())));
        row.addView(button("Camera", v -> camera.launch(null)));
        row.addView(button("Self-check", v -> selfCheck()));
        col.addView(row);
        preview = new ImageView(this);
        preview.setAdjustViewBounds(true);
        preview.setMaxHeight(600);
        col.addView(preview);
        question = new EditText(this);
        question.setHint("Ask about the picture");
        question.setText("What is in the image?");
        col.addView(question);
        stock = new CheckBox(this);
        stock.setText("Stock ExecuTorch runner (baseline, dense builds)");
        col.addView(stock);
        col.addView(button("Ask", v -> ask()));
        figures = new TextView(this);
        col.addView(figures);
        answer = new TextView(this);
        answer.setTextSize(18);
        col.addView(answer);
        ScrollView scroll = new ScrollView(this);
        scroll.addView(col);
        setContentView(scroll);
        findBuilds();
    }

    private Button button(String label, View.OnClickListener onClick) {
        Button b = new Button(this);
        b.setText(label);
        b.setOnClickListener(onClick);
        return b;
    }

    /** Every directory with a manifest.json under the app's external files directory. */
    private void findBuilds() {
        File root = getExternalFilesDir(null);
        List<String> names = new ArrayList<>();
        File[] dirs = root == null ? null : root.listFiles();
        for (File d : dirs == null ? new File[0] : dirs) {
            if (new File(d, "manifest.json").isFile()) {
                builds.add(d);
                names.add(d.getName());
            }
        }
        if (builds.isEmpty()) {
            figures.setText("No build found. Push one: adb push BUILD_DIR " + root + "/");
        }
        buildChoice.setAdapter(new ArrayAdapter<>(this, android.R.layout.simple_spinner_dropdown_item, names));
    }

    private void onPicked(Uri uri) {
        if (uri == null) {
            return;
        }
        try {
            onPhoto(Images.decode(getContentResolver(), uri));
        } catch (Exception e) {
            figures.setText(e.getMessage());
        }
    }

    private void onPhoto(Bitmap bitmap) {
        if (bitmap != null) {
            photo = bitmap;
            preview.setImageBitmap(bitmap);
        }
    }

    private void selfCheck() {
        File dir = selected();
        if (dir != null) {
            startActivity(new Intent(this, SelfCheckActivity.class).putExtra(EXTRA_BUILD, dir.getAbsolutePath()));
        }
    }

    private File selected() {
        int i = buildChoice.getSelectedItemPosition();
        return i >= 0 && i < builds.size() ? builds.get(i) : null;
    }

    private void ask() {
        File dir = selected();
        if (dir == null || photo == null) {
            figures.setText(dir == null ? "Push a build first (README.md)." : "Pick or take a photo first.");
            return;
        }
        String q = question.getText().toString();
        boolean baseline = stock.isChecked();
        ArgbImage image = Images.fromBitmap(photo);
        answer.setText("");
        figures.setText("running ...");
        worker.execute(() -> {
            try {
                load(dir, baseline);
                if (baseline) {
                    StockEngine.Result r = stockEngine.generate(image, q, MAX_NEW_TOKENS, this::append);
                    show(String.format(Locale.ROOT, "stock runner | plan %s | %d vision tokens\n"
                                    + "image + prefill %.0f ms, TTFT %.0f ms, decode %.1f pieces/s",
                            pipeline.manifest.planName, pipeline.manifest.kv.visionTokens,
                            r.imageEncodeAndPrefillS * 1e3, r.ttftS * 1e3, r.decodeTokS));
                } else {
                    Pipeline.Result r = pipeline.generate(image, q, MAX_NEW_TOKENS, Sampler.greedy(), this::append);
                    show(String.format(Locale.ROOT, "foveate | plan %s | %d vision tokens | %d tokens\n"
                                    + "image encode %.0f ms, prefill %.0f ms, TTFT %.0f ms, decode %.1f tok/s",
                            pipeline.manifest.planName, r.visionTokens, r.ids.length, r.timings.imageEncodeS * 1e3,
                            r.timings.prefillS * 1e3, r.timings.ttftS * 1e3, r.timings.decodeTokS));
                }
            } catch (RuntimeException e) {
                show("error: " + e.getMessage());
            }
        });
    }

    /** On the worker thread: load the chosen build once (and the stock runner when asked for). */
    private void load(File dir, boolean baseline) {
        if (!dir.equals(loadedDir)) {
            close();
            Manifest m = Manifest.load(dir);
            pipeline = new Pipeline(m, new ExecuTorchEngine(m, 0));
            loadedDir = dir;
        }
        if (baseline && stockEngine == null) {
            stockEngine = new StockEngine(pipeline.manifest);
        }
    }

    private void append(String delta) {
        if (!delta.isEmpty()) {
            runOnUiThread(() -> answer.append(delta));
        }
    }

    private void show(String text) {
        runOnUiThread(() -> figures.setText(text));
    }

    private void close() {
        if (pipeline != null) {
            pipeline.close();
            pipeline = null;
        }
        if (stockEngine != null) {
            stockEngine.close();
            stockEngine = null;
        }
        loadedDir = null;
    }

    @Override
    protected void onDestroy() {
        worker.execute(this::close);
        worker.shutdown();
        super.onDestroy();
    }
}
