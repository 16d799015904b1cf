;; A guest that misbehaves on purpose, for tests of what godwit accepts
;; from guests (docs/abi.md). godwit_handle scans the event bytes for a
;; four-letter marker:
;;
;;   "echo"  passes the event itself to set_result (valid, unless the event
;;           is too deep or too large), returns 0
;;   "badr"  passes two bytes that are not a BSON document to set_result
;;   "bigr"  passes the whole memory to set_result
;;   "logx"  logs a message that runs past the end of memory
;;   "inbd"  inserts two bytes that are not a BSON document into test.out,
;;           returns the host's code
;;   "inbg"  inserts from a pointer outside memory, returns the host's code
;;   other   returns 0
;;
;; Rebuild with: wat2wasm hostile.wat -o hostile.wasm   (Debian package wabt)
(module
  (import "godwit" "log" (func $log (param i32 i32 i32)))
  (import "godwit" "set_result" (func $set_result (param i32 i32)))
  (import "godwit" "insert" (func $insert (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "ok")
  (data (i32.const 64) "test.out")

  (func (export "godwit_abi_version") (result i32) (i32.const 1))

  ;; The event buffer always starts at 64 KiB; grow memory to fit.
  (func (export "godwit_alloc") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.sub
        (i32.shr_u (i32.add (i32.add (local.get $size) (i32.const 65536)) (i32.const 65535)) (i32.const 16))
        (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then
        (if (i32.lt_s (memory.grow (local.get $need)) (i32.const 0))
          (then (return (i32.const 0))))))
    (i32.const 65536))

  ;; find returns 1 when the 4-byte word occurs in [ptr, ptr+len).
  (func $find (param $ptr i32) (param $len i32) (param $word i32) (result i32)
    (local $i i32)
    (if (i32.lt_u (local.get $len) (i32.const 4)) (then (return (i32.const 0))))
    (block $done
      (loop $scan
        (br_if $done (i32.gt_u (local.get $i) (i32.sub (local.get $len) (i32.const 4))))
        (if (i32.eq (i32.load (i32.add (local.get $ptr) (local.get $i))) (local.get $word))
          (then (return (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (i32.const 0))

  (func (export "godwit_handle") (param $ptr i32) (param $len i32) (result i32)
    ;; "echo"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x6f686365))
      (then
        (call $set_result (local.get $ptr) (local.get $len))
        (return (i32.const 0))))
    ;; "badr"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x72646162))
      (then
        (call $set_result (i32.const 16) (i32.const 2))
        (return (i32.const 0))))
    ;; "bigr"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x72676962))
      (then
        (call $set_result (i32.const 0) (i32.shl (memory.size) (i32.const 16)))
        (return (i32.const 0))))
    ;; "logx"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x78676f6c))
      (then
        (call $log (i32.const 1) (i32.const 16) (i32.const 0x7ffffff0))
        (return (i32.const 0))))
    ;; "inbd"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x64626e69))
      (then
        (return (call $insert (i32.const 64) (i32.const 8) (i32.const 16) (i32.const 2)))))
    ;; "inbg"
    (if (call $find (local.get $ptr) (local.get $len) (i32.const 0x67626e69))
      (then
        (return (call $insert (i32.const 64) (i32.const 8) (i32.const 0x7ffffff0) (i32.const 64)))))
    (i32.const 0))
)
