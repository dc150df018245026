// JNI for org.foveate.nativeengine.NativeEngine: every C++ failure becomes one BuildException, never a crash.
#include <jni.h>

#include <string>
#include <vector>

#include "engine.h"

namespace {

constexpr const char* kException = "org/foveate/core/BuildException";

void throw_java(JNIEnv* env, const std::string& message) {
  if (env->ExceptionCheck()) return;  // one exception at a time: keep the first
  jclass cls = env->FindClass(kException);
  if (cls == nullptr) {
    env->ExceptionClear();
    cls = env->FindClass("java/lang/IllegalArgumentException");
  }
  env->ThrowNew(cls, message.c_str());
}

std::string to_string(JNIEnv* env, jstring s) {
  if (s == nullptr) return "";
  const char* chars = env->GetStringUTFChars(s, nullptr);
  std::string out(chars);
  env->ReleaseStringUTFChars(s, chars);
  return out;
}

foveate::Engine* engine(JNIEnv* env, jlong handle) {
  if (handle == 0) throw foveate::EngineError("the engine is closed");
  return reinterpret_cast<foveate::Engine*>(handle);
}

std::vector<foveate::HostTensor> to_host(JNIEnv* env, jobjectArray data, jobjectArray shapes) {
  jsize n = data == nullptr ? 0 : env->GetArrayLength(data);
  if (shapes == nullptr || env->GetArrayLength(shapes) != n) throw foveate::EngineError("one shape per input");
  jclass floats = env->FindClass("[F");
  jclass longs = env->FindClass("[J");
  std::vector<foveate::HostTensor> out(n);
  for (jsize i = 0; i < n; ++i) {
    jobject d = env->GetObjectArrayElement(data, i);
    auto s = static_cast<jlongArray>(env->GetObjectArrayElement(shapes, i));
    if (d == nullptr || s == nullptr) throw foveate::EngineError("input " + std::to_string(i) + " is null");
    foveate::HostTensor& t = out[i];
    t.shape.resize(env->GetArrayLength(s));
    env->GetLongArrayRegion(s, 0, t.shape.size(), reinterpret_cast<jlong*>(t.shape.data()));
    if (env->IsInstanceOf(d, floats)) {
      auto a = static_cast<jfloatArray>(d);
      t.floats.resize(env->GetArrayLength(a));
      env->GetFloatArrayRegion(a, 0, t.floats.size(), t.floats.data());
    } else if (env->IsInstanceOf(d, longs)) {
      auto a = static_cast<jlongArray>(d);
      t.dtype = foveate::HostTensor::DType::Int64;
      t.longs.resize(env->GetArrayLength(a));
      env->GetLongArrayRegion(a, 0, t.longs.size(), reinterpret_cast<jlong*>(t.longs.data()));
    } else {
      throw foveate::EngineError("input " + std::to_string(i) + " is neither float[] nor long[]");
    }
    env->DeleteLocalRef(d);
    env->DeleteLocalRef(s);
  }
  return out;
}

jobjectArray to_java(JNIEnv* env, const std::vector<foveate::HostTensor>& outputs) {
  jobjectArray out = env->NewObjectArray(2 * outputs.size(), env->FindClass("java/lang/Object"), nullptr);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const foveate::HostTensor& t = outputs[i];
    jobject data;
    if (t.dtype == foveate::HostTensor::DType::Float32) {
      jfloatArray a = env->NewFloatArray(t.floats.size());
      env->SetFloatArrayRegion(a, 0, t.floats.size(), t.floats.data());
      data = a;
    } else {
      jlongArray a = env->NewLongArray(t.longs.size());
      env->SetLongArrayRegion(a, 0, t.longs.size(), reinterpret_cast<const jlong*>(t.longs.data()));
      data = a;
    }
    jlongArray shape = env->NewLongArray(t.shape.size());
    env->SetLongArrayRegion(shape, 0, t.shape.size(), reinterpret_cast<const jlong*>(t.shape.data()));
    env->SetObjectArrayElement(out, 2 * i, data);
    env->SetObjectArrayElement(out, 2 * i + 1, shape);
    env->DeleteLocalRef(data);
    env->DeleteLocalRef(shape);
  }
  return out;
}

}  // namespace

extern "C" {

JNIEXPORT jlong JNICALL Java_org_foveate_nativeengine_NativeEngine_nativeLoad(JNIEnv* env, jclass, jstring path) {
  try {
    return reinterpret_cast<jlong>(new foveate::Engine(to_string(env, path)));
  } catch (const std::exception& e) {
    throw_java(env, e.what());
  } catch (...) {
    throw_java(env, "ExecuTorch failed with an unknown error while loading");
  }
  return 0;
}

JNIEXPORT jobjectArray JNICALL Java_org_foveate_nativeengine_NativeEngine_nativeMethods(JNIEnv* env, jclass,
                                                                                         jlong handle) {
  try {
    auto names = engine(env, handle)->method_names();
    jobjectArray out = env->NewObjectArray(names.size(), env->FindClass("java/lang/String"), nullptr);
    for (size_t i = 0; i < names.size(); ++i) {
      jstring s = env->NewStringUTF(names[i].c_str());
      env->SetObjectArrayElement(out, i, s);
      env->DeleteLocalRef(s);
    }
    return out;
  } catch (const std::exception& e) {
    throw_java(env, e.what());
  }
  return nullptr;
}

JNIEXPORT jobjectArray JNICALL Java_org_foveate_nativeengine_NativeEngine_nativeRun(
    JNIEnv* env, jclass, jlong handle, jstring method, jobjectArray data, jobjectArray shapes) {
  try {
    foveate::Engine* e = engine(env, handle);
    auto inputs = to_host(env, data, shapes);
    return to_java(env, e->run(to_string(env, method), inputs));
  } catch (const std::exception& e) {
    throw_java(env, e.what());
  } catch (...) {
    throw_java(env, "ExecuTorch failed with an unknown error while running");
  }
  return nullptr;
}

JNIEXPORT void JNICALL Java_org_foveate_nativeengine_NativeEngine_nativeClose(JNIEnv*, jclass, jlong handle) {
  delete reinterpret_cast<foveate::Engine*>(handle);
}

}  // extern "C"
