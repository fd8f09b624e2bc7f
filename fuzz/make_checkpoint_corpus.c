/*
 * make_checkpoint_corpus.c - writes the seed corpus of fuzz_checkpoint: three tiny valid model
 * files in format version 2 (docs/FORMAT.md; an MLP without optimizer, a CNN with BatchNorm and
 * a CSR layer with SGD state, an N:M / residual / BSR model with Adam state and no training
 * position; seed4 and seed5, 8- and 4-bit quantized models whose qlinear layers keep their
 * weights as layer tensors), each under the fuzzer's 4096-byte -max_len. seed3.sparrow is a version-1 file (seed1
 * as written before CSR patterns had their own record kind, a bit mask): it is not rewritten,
 * and keeps the version-1 reader fuzzed.
 *
 *   cc -Iinclude fuzz/make_checkpoint_corpus.c build/libsparrow.a -lopenblas -lz -lm -lpthread \
 *      -o /tmp/mkc && /tmp/mkc fuzz/corpus/checkpoint
 */
#include <stdio.h>
#include "sparrow/sparrow.h"
int main(int argc, char **argv){
  const char *dir = argc > 1 ? argv[1] : "fuzz/corpus/checkpoint";
  const char *cfgs[] = {"flatten\nlinear out=4\nrelu\nlinear out=classes\n",
    "conv2d out=2 k=3 pad=1\nbatchnorm\nrelu\nmaxpool k=2\nflatten\nlinear out=classes format=csr density=0.5\n",
    "linear out=6 format=nm nm=2:4\ngelu\nresidual {\n linear out=6\n}\ndropout p=0.1\nlinear out=classes format=bsr density=0.5 block=2x2\n"};
  sp_shape ins[] = {{1,3,3},{1,4,4},{8,1,1}};
  for (int i=0;i<3;i++){ sp_model*m; if(sp_model_new(cfgs[i],ins[i],3,1,&m)){printf("%s\n",sp_last_error());return 1;}
    sp_optim_config oc=sp_optim_defaults(i==1?SP_OPTIM_SGD:SP_OPTIM_ADAM); oc.momentum=i==1?0.9f:0; sp_optim*o; sp_optim_new(&oc,sp_model_nparams(m),&o);
    sp_train_state ts={5,1,2,3}; char p[128]; snprintf(p,sizeof p,"%s/seed%d.sparrow",dir,i);
    if(sp_checkpoint_save(p,m,i==0?NULL:o,i==2?NULL:&ts,"--model x\n")){printf("%s\n",sp_last_error());return 1;}
    sp_model_free(m); sp_optim_free(o);}
  /* seed4, seed5: 8- and 4-bit quantized models (a CSR and a dense qlinear layer, weights kept as layer
   * tensors "N.q.*"), so that the layer-tensor hooks are fuzzed too */
  for (int bits=8; bits>=4; bits-=4){ sp_model*m,*qm; char p[128];
    if(sp_model_new("linear out=6 format=csr density=0.5\nrelu\nlinear out=classes\n",(sp_shape){8,1,1},3,1,&m)){printf("%s\n",sp_last_error());return 1;}
    sp_quant_opts qo={.bits=bits,.nthreads=1};
    if(sp_model_quantize(m,&qo,&qm)){printf("%s\n",sp_last_error());return 1;}
    snprintf(p,sizeof p,"%s/seed%d.sparrow",dir,bits==8?4:5);
    if(sp_checkpoint_save(p,qm,NULL,NULL,NULL)){printf("%s\n",sp_last_error());return 1;}
    sp_model_free(qm); sp_model_free(m);}
  return 0;}
