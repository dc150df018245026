package org.foveate.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;

import org.json.JSONObject;
import org.junit.BeforeClass;
import org.junit.Test;

/** The manifest is read whole or refused with one clear message naming what is wrong. */
public class ManifestTest {
    private static File build;
    private static JSONObject json;

    @BeforeClass
    public static void load() throws Exception {
        build = Vectors.buildDir();
        json = new JSONObject(Manifest.readText(new File(build, "manifest.json")));
    }

    private static String refusal(JSONObject m) throws Exception {
        try {
            Manifest.parse(m.toString(), build, "manifest.json");
        } catch (BuildException e) {
            return e.getMessage();
        }
        fail("accepted " + m.toString().substring(0, 60));
        return null;
    }

    @Test
    public void readsTheBuild() throws Exception {
        Manifest m = Manifest.load(build);
        assertEquals(json.getString("name"), m.name);
        assertEquals(json.getString("kv_layout"), m.kv.layout);
        assertEquals(json.getJSONObject("kv").getInt("text_rows"), m.kv.textRows);
        for (String method : Protocol.methodsFor(m.kv.layout)) {
            assertEquals(method, Protocol.inputsFor(method, m.kv), m.method(method).inputNames());
        }
    }

    @Test
    public void anotherSchemaVersionIsRefused() throws Exception {
        JSONObject m = new JSONObject(json.toString());
        m.put("schema_version", 1);
        String msg = refusal(m);
        assertTrue(msg, msg.contains("schema version 1; this runtime reads version 2"));
        m.remove("schema_version");
        assertTrue(refusal(m).contains("schema version None"));
    }

    @Test
    public void aMissingMethodIsRefused() throws Exception {
        JSONObject m = new JSONObject(json.toString());
        m.getJSONObject("graphs").getJSONObject("methods").remove("text_decoder");
        String msg = refusal(m);
        assertEquals("manifest.json: graphs.methods: 'text_decoder' is a required property", msg);
        try {
            Manifest.load(build).method("no_such_method");
            fail();
        } catch (BuildException e) {
            assertTrue(e.getMessage().contains("has no method 'no_such_method'; it has"));
        }
    }

    @Test
    public void aMissingKeyIsRefused() throws Exception {
        JSONObject m = new JSONObject(json.toString());
        m.remove("kv");
        assertEquals("manifest.json: 'kv' is a required property", refusal(m));
    }

    @Test
    public void aValueAgainstTheSchemaIsRefusedWithItsPath() throws Exception {
        JSONObject m = new JSONObject(json.toString());
        m.getJSONObject("image").put("pad_color", new org.json.JSONArray("[0, 300, 0]"));
        assertEquals("manifest.json: image.pad_color[1]: 300 is greater than the maximum of 255", refusal(m));
        m = new JSONObject(json.toString());
        m.getJSONObject("kv").put("vision_kv_shape", JSONObject.NULL); // what a shared-layout build writes
        Manifest.parse(m.toString(), build, "manifest.json");
        m.getJSONObject("parity").put("skipped", "no");
        assertEquals("manifest.json: parity.skipped: \"no\" is not of type 'boolean'", refusal(m));
    }

    /** Each of the vectors' bad manifests (docs/vectors.md): refused, one line, naming what Python's names. */
    @Test
    public void everyBadManifestOfTheVectorsIsRefused() throws Exception {
        org.json.JSONArray cases = Vectors.load().getJSONArray("bad_manifests");
        assertTrue("the vectors hold " + cases.length() + " bad manifests", cases.length() >= 10);
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            String name = c.getString("name");
            String msg = null;
            try {
                Manifest.parse(c.getString("text"), build, "manifest.json");
            } catch (BuildException e) {
                msg = e.getMessage();
            }
            assertTrue(name + " was accepted", msg != null);
            assertTrue(name + ": " + msg, msg.startsWith("manifest.json") && !msg.contains("\n"));
            org.json.JSONArray mentions = c.getJSONArray("mentions");
            for (int k = 0; k < mentions.length(); k++) {
                assertTrue(name + ": '" + msg + "' does not mention " + mentions.getString(k),
                        msg.contains(mentions.getString(k)));
            }
        }
    }

    @Test
    public void aMissingDirectoryOrFileIsRefused() throws Exception {
        try {
            Manifest.load(new File("/nonexistent/build"));
            fail();
        } catch (BuildException e) {
            assertTrue(e.getMessage().startsWith("build directory not found"));
        }
        File dir = Files.createTempDirectory("foveate-manifest").toFile();
        try {
            Files.write(new File(dir, "manifest.json").toPath(), json.toString().getBytes(StandardCharsets.UTF_8));
            Manifest.load(dir);
            fail();
        } catch (BuildException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("named in its manifest"));
        } finally {
            new File(dir, "manifest.json").delete();
            dir.delete();
        }
    }

    @Test
    public void declaredInputsMustBeTheProtocols() throws Exception {
        JSONObject m = new JSONObject(json.toString());
        m.getJSONObject("graphs").getJSONObject("methods").getJSONObject("token_embedding").getJSONArray("inputs")
                .getJSONObject(0).put("name", "input_ids");
        Manifest manifest = Manifest.parse(m.toString(), build, "manifest.json");
        try {
            new ReplayEngine(manifest, new org.json.JSONArray(), 0.0);
            fail();
        } catch (BuildException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("token_embedding declares inputs [input_ids]"));
        }
    }
}
